"""The selection (database, run, query, class, iteration, ...) and the URL.

The selection lives in ``st.session_state`` (so it survives page changes,
which clear the query string) and is mirrored into ``st.query_params`` at the
end of every run (so a view can be shared and reloaded). At the start of a
run, values the URL brings that differ from what the app last wrote (a deep
link, a hand-edited URL, a link from another page) win over the session.
Values are kept as strings, as in the URL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import streamlit as st

#: Query-string keys the dashboard reads and writes.
PARAMS: tuple[str, ...] = ("db", "run", "iteration", "query", "class", "run_b",
                           "iteration_b", "other", "iteration_other", "sweep", "beta",
                           "variant", "baseline", "test", "dataset")

_SEL = "_selection"
_WRITTEN = "_url_written"
T = TypeVar("T")


def widget_key(param: str) -> str:
    """Session-state key of the widget bound to ``param``."""
    return f"_w_{param}"


def selection() -> dict[str, str]:
    """This session's selection (mutable), created empty on first use."""
    return st.session_state.setdefault(_SEL, {})


def adopt_url() -> None:
    """Take the values the URL brings, when it differs from what the app wrote."""
    url = {k: st.query_params[k] for k in PARAMS if k in st.query_params}
    if url == st.session_state.get(_WRITTEN):
        return
    sel = selection()
    for k, v in url.items():
        if sel.get(k) != v:
            sel[k] = v
            st.session_state.pop(widget_key(k), None)  # the widget re-reads the selection


def write_url() -> None:
    """Mirror the selection into the URL (only when it changed)."""
    want = {k: v for k, v in selection().items() if k in PARAMS and v not in (None, "")}
    have = {k: st.query_params[k] for k in PARAMS if k in st.query_params}
    if have != want:
        for k in set(have) - set(want):
            del st.query_params[k]
        st.query_params.update(want)
    st.session_state[_WRITTEN] = want


def get(param: str, default: str | None = None) -> str | None:
    """The selected value of ``param`` (a string) or ``default``."""
    return selection().get(param, default)


def get_int(param: str) -> int | None:
    """The selected value of ``param`` as an int, None when absent or not a number."""
    try:
        return int(selection()[param])
    except (KeyError, TypeError, ValueError):
        return None


def put(param: str, value: object | None) -> None:
    """Set (or with None, clear) the selected value of ``param``."""
    sel = selection()
    if value is None:
        sel.pop(param, None)
    else:
        sel[param] = str(value)


def matches(option: object, wanted: str | None) -> bool:
    """Whether a URL value names ``option`` (``"1"`` names ``1.0`` too)."""
    if wanted is None:
        return False
    if str(option) == wanted:
        return True
    try:
        return float(option) == float(wanted)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def select(
    container: Any,
    label: str,
    options: Sequence[T],
    param: str,
    *,
    default: T | None = None,
    format_func: Callable[[T], str] = str,
    **kwargs: Any,
) -> T | None:
    """A selectbox bound to ``param``: starts at the selected value, writes it back.

    Args:
        container: ``st``, ``st.sidebar`` or a column.
        label: Widget label.
        options: Choices; matched against the selection with ``matches``.
        param: Selection key (see ``PARAMS``).
        default: Choice when the selection holds none of ``options``
            (the first option when None).
        format_func: How a choice is shown.
        **kwargs: Passed on to ``selectbox``.

    Returns:
        The chosen option, None when there are no options.
    """
    options = list(options)
    if not options:
        put(param, None)
        return None
    wanted = get(param)
    index = next((i for i, o in enumerate(options) if matches(o, wanted)), None)
    if index is None:
        index = options.index(default) if default in options else 0
    key = widget_key(param)
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]
    value = container.selectbox(label, options, index=index, key=key,
                                format_func=format_func, **kwargs)
    put(param, value)
    return value
