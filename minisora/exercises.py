"""Self-checking exercises for the notebooks: a check says right or wrong and never stops the lesson.

A notebook's exercise is two cells. The answer cell starts with a `# Exercise NN.K` line and leaves a
placeholder (`...` for a value, `raise NotImplementedError` in a function). The check cell calls

    check("NN.K", test)

where `test()` asserts what a right answer does, with a hint as the assertion's message. Reference
answers live in notebooks/solutions/NN_*.py under the same `# Exercise NN.K` headers;
tests/test_exercises.py runs every notebook with them and checks that every check says right, and
runs it as stored and checks that no check does.
"""

from __future__ import annotations

import traceback

RIGHT, WRONG, UNANSWERED = "✓ right", "✗ not yet", "… not answered yet"


class NotAnswered(Exception):
    """Raised by `answer` when a placeholder is still in place."""


def answer(value):
    """Return `value`, or raise NotAnswered if it is still the `...` placeholder (or None)."""
    if value is Ellipsis or value is None:
        raise NotAnswered
    return value


def check(exercise: str, test) -> None:
    """Run `test()` and print one line: right, not yet (with the hint), or not answered yet.

    Returns None, so that a check cell shows only that line.
    """
    try:
        test()
    except (NotAnswered, NotImplementedError):
        print(f"Exercise {exercise}: {UNANSWERED} (replace the placeholder and run both cells again)")
        return
    except AssertionError as failure:
        print(f"Exercise {exercise}: {WRONG}. {failure or 'the answer does not pass the check.'}")
        return
    except Exception as error:  # the student's code crashed: show where, briefly
        where = traceback.extract_tb(error.__traceback__)[-1]
        print(f"Exercise {exercise}: {WRONG}. Your code raised {type(error).__name__}: {error} "
              f"(line {where.lineno} of {where.name})")
        return
    print(f"Exercise {exercise}: {RIGHT}")
