"""FasttuneError is its own kind of exception."""

import fasttune


def test_fasttune_error_is_no_value_error_so_except_value_error_does_not_swallow_it():
    assert not issubclass(fasttune.FasttuneError, ValueError)
    try:
        try:
            fasttune.tasks.get("rtee")
        except ValueError:
            raise AssertionError("a FasttuneError was caught as a ValueError") from None
    except fasttune.FasttuneError as error:
        assert "Did you mean: rte" in str(error)
