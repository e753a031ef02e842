import types

import loopline.evaluate as evaluate


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert evaluate.__all__ == sorted(evaluate.__all__)
    assert all(getattr(evaluate, name) is not None for name in evaluate.__all__)


def test_every_public_name_is_exported() -> None:
    public = {
        name
        for name, value in vars(evaluate).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(evaluate.__all__)
