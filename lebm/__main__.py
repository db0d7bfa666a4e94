from lebm.cli import main

main()
