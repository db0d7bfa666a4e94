"""Helpers the tests share (not tests themselves):

- ``cli_runner``: the ``lebm`` command in the test process (``run_cli``, ``SHORT_RUN``, ``REPO``) and
  the callbacks tests name by class path (``tests.helpers.cli_runner.SigtermAt`` ...);
- ``trainers``: ``quiet_trainer``, the Lightning Trainer every test builds;
- ``page_parts``: the code and recipes of ``docs/extending.md`` as a user's module;
- ``text_cases``: small text models with an exactly computable likelihood;
- ``scripts``: ``load_script``, a script of ``benchmarks/``, ``experiments/`` or ``scripts/`` as a module;
- ``table_width``: how wide the documentation site draws a Markdown table, from the page's text.
"""
