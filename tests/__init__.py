"""lebm's tests. They mirror ``lebm/`` (a test of ``lebm/X/...`` lives in ``tests/X/``); tests of the
project as a whole (README and docs, recipes, benchmarks, results records, the installed wheel,
import layers, the gpu tier) and of lebm's top-level modules stay here. Shared helpers are in
``tests/helpers`` (``from tests.helpers.trainers import quiet_trainer``): setup.cfg puts the
repository root on ``sys.path``."""
