from lebm.cli.main import main

main()
