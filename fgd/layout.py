"""A pytree's structure as plain JSON, and the structure rebuilt from it.

`fgd.checkpoint` files store a tree's leaves and their key paths; to open a
file without a `like` tree (`fgd.resume.load`), the writer also stores the
tree's layout, a nested JSON description of every node:

    {"node": "leaf"}                                    an array or scalar
    {"node": "none"}                                    None
    {"node": "list" | "tuple", "children": [...]}
    {"node": "dict", "keys": [...], "children": [...]}  keys in jax's (sorted) order
    {"node": "namedtuple", "class": "module:QualName", "fields": [...], "children": [...]}
    {"node": "other", "class": "module:QualName", "children": [...]}

`rebuild(layout, leaves)` puts leaves back in that shape. Nothing is imported
or executed on the way back: a namedtuple's class is taken from a module
already imported (`sys.modules`) when it is a namedtuple with the same
fields, and is otherwise a fresh `collections.namedtuple` of the same name
and fields; an "other" node (a custom pytree class) comes back as a tuple of
its children.
"""
from __future__ import annotations

import collections
import sys
from typing import Any, Iterator

import jax


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def describe(tree: Any) -> dict:
    """The JSON layout of `tree` (see the module docstring). Children come in
    jax's flattening order: flattening with every proper subtree a leaf gives
    the direct children (None ones included)."""
    if tree is None:
        return {"node": "none"}
    children, treedef = jax.tree_util.tree_flatten(tree, is_leaf=lambda y: y is not tree)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # type: ignore[attr-defined]     # () is a node without leaves
        return {"node": "leaf"}
    kids = [describe(c) for c in children]
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        fields = list(type(tree)._fields)  # type: ignore[attr-defined]
        return {"node": "namedtuple", "class": _class_name(type(tree)),
                "fields": fields, "children": kids}
    if type(tree) in (list, tuple):
        return {"node": type(tree).__name__, "children": kids}
    if type(tree) is dict:
        keys = sorted(tree)
        if not all(isinstance(k, (str, int)) for k in keys):
            return {"node": "other", "class": "builtins:dict", "children": kids}
        return {"node": "dict", "keys": keys, "children": kids}
    return {"node": "other", "class": _class_name(type(tree)), "children": kids}


def _namedtuple(name: str, fields: list) -> type:
    module, _, qualname = name.partition(":")
    obj: Any = sys.modules.get(module)          # only modules already imported
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, type) and issubclass(obj, tuple) and list(getattr(obj, "_fields", ())) == fields:
        return obj
    short = qualname.rsplit(".", 1)[-1]
    return collections.namedtuple(short if short.isidentifier() else "State", fields)


def rebuild(layout: Any, leaves: Any) -> Any:
    """The tree of `layout` holding `leaves` (in flattening order).

    Raises:
      ValueError: a malformed layout, or one whose leaf count differs from
        `len(leaves)`.
    """
    it = iter(leaves)
    tree = _build(layout, it, depth=0)
    if next(it, _END) is not _END:
        raise ValueError("layout: fewer leaf positions than stored leaves")
    return tree


_END = object()


def _build(node: Any, it: Iterator, depth: int) -> Any:
    if depth > 200 or not isinstance(node, dict):
        raise ValueError(f"layout: malformed node {str(node)[:80]}")
    kind = node.get("node")
    if kind == "leaf":
        leaf = next(it, _END)
        if leaf is _END:
            raise ValueError("layout: more leaf positions than stored leaves")
        return leaf
    if kind == "none":
        return None
    children = node.get("children")
    if not isinstance(children, list):
        raise ValueError(f"layout: {kind!r} node without children")
    kids = [_build(c, it, depth + 1) for c in children]
    if kind == "list":
        return kids
    if kind in ("tuple", "other"):
        return tuple(kids)
    if kind == "dict":
        keys = node.get("keys")
        if not isinstance(keys, list) or len(keys) != len(kids) or len(set(map(str, keys))) != len(keys):
            raise ValueError("layout: dict node whose keys do not match its children")
        return dict(zip(keys, kids))
    if kind == "namedtuple":
        fields, name = node.get("fields"), node.get("class")
        if (not isinstance(fields, list) or len(fields) != len(kids) or not isinstance(name, str)
                or not all(isinstance(f, str) and f.isidentifier() and not f.startswith("_")
                           for f in fields)):
            raise ValueError(f"layout: malformed namedtuple node {str(node)[:80]}")
        return _namedtuple(name, fields)(*kids)
    raise ValueError(f"layout: unknown node kind {kind!r}")
