import types

import loopline


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert loopline.__all__ == sorted(loopline.__all__)
    for name in loopline.__all__:
        assert getattr(loopline, name) is not None


def test_every_public_name_of_the_package_is_exported() -> None:
    public = {
        name
        for name, value in vars(loopline).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(loopline.__all__)


def test_the_documented_entry_points_are_there() -> None:
    assert callable(loopline.load_config)
    assert issubclass(loopline.LooplineError, Exception)
    assert hasattr(loopline.IngestPipeline, "run")


def test_training_names_load_lazily_so_ingestion_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, loopline; assert 'sklearn' not in sys.modules; "
        "loopline.TrainingJob; assert 'sklearn' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
