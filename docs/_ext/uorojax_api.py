"""The API reference's one list of names per layer, and the checks around it.

``api-list`` takes one name a line, spelled as users import it::

    ```{api-list}
    uorojax.uoro
    uorojax.UOROState
    uorojax.estimators: ApplyFn LossFn
    uorojax.diagnostics
    uorojax.models: -
    ```

and writes a summary table of them, then each one's full entry (``autofunction``,
``autoclass``, ``autoexception``, ``autodata``, or for a module ``automodule`` with its
members: those after ``:``, none after ``: -``, else every name of its ``__all__`` or
every public name it defines). Moving a name to another page is moving its line; moving
its definition to another module changes nothing here.

At the end of reading, every name of ``uorojax.__all__`` must be on a page (a warning,
so ``-W`` fails the build otherwise). A reference to a name by the module that defines it
(``uorojax.estimators.base.Estimator``, as type hints spell it) resolves to the entry of
the same object under its public name.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
import types
import typing

from docutils import nodes
from docutils.parsers.rst import Parser as RSTParser
from docutils.parsers.rst.states import RSTState
from docutils.statemachine import StringList
from docutils.utils import new_document
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)


def resolve(name: str):
    """The object a dotted name refers to (modules, then attributes)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(name)


def _directive(obj) -> str:
    if inspect.ismodule(obj):
        return "automodule"
    if inspect.isclass(obj):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if isinstance(obj, (types.GenericAlias, typing._GenericAlias)):  # ApplyFn = Callable[...]
        return "autodata"
    if callable(obj):
        return "autofunction"
    return "autodata"


def _entry(name: str, obj) -> list[str]:
    """The reStructuredText of one object's entry."""
    kind = _directive(obj)
    rst = [f".. {kind}:: {name}"]
    if kind in ("autoclass", "autoexception"):
        rst.append("   :members:")
        fields = _fields(obj)
        if fields:
            # Documented by the class docstring's Attributes: section; autodoc's own
            # entries for them would describe the same names twice.
            rst.append("   :exclude-members: " + ", ".join(fields))
    return rst + [""]


class APIList(SphinxDirective):
    has_content = True

    def run(self):
        entries = []  # (name, members named after ":", whether ":" was followed by "-")
        for line in self.content:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, after = line.partition(":")
            members = after.split()
            entries.append((name.strip(), [m for m in members if m != "-"], "-" in members))
        documented = self.env.domaindata.setdefault("uorojax_api", {}).setdefault(
            self.env.docname, set()
        )
        rst = [".. autosummary::", ""]
        rst += [f"   {name}" for name, _, _ in entries]
        rst.append("")
        for name, members, docstring_only in entries:
            try:
                obj = resolve(name)
                member_objs = [resolve(f"{name}.{member}") for member in members]
            except (ImportError, AttributeError) as e:
                logger.warning(f"api-list: cannot import {name}: {e}", location=self.get_location())
                continue
            documented.add(name)
            if not inspect.ismodule(obj):
                rst += _entry(name, obj)
                continue
            # By the module's own name: ``uorojax.diagnostics`` may be an attribute for
            # ``uorojax.analysis.diagnostics``, which autodoc cannot import as spelled.
            module = obj.__name__
            if members or docstring_only:
                # The module's docstring, then the members named, each as its own entry
                # (so that an alias without a docstring, such as ApplyFn, is shown too).
                rst += [f".. automodule:: {module}", "   :no-members:", ""]
                for member, member_obj in zip(members, member_objs):
                    documented.add(f"{name}.{member}")
                    rst += _entry(f"{module}.{member}", member_obj)
            else:
                rst += [f".. automodule:: {module}", "   :members:", ""]
                documented.update(f"{name}.{m}" for m in getattr(obj, "__all__", []))
        return self._parse_rst(rst)

    def _parse_rst(self, lines: list[str]) -> list[nodes.Node]:
        """The generated reStructuredText as nodes, in an rST or a MyST page alike."""
        source, line = self.get_source_info()
        if isinstance(self.state, RSTState):
            node = nodes.container()
            nested_parse_with_titles(self.state, StringList(lines, source=source), node)
            return node.children
        # MyST: parse as its {eval-rst} does, into a document sharing the page's settings.
        document = self.state.document
        newdoc = new_document(document["source"], document.settings)
        newdoc.reporter = document.reporter
        RSTParser().parse("\n" * (line or 0) + "\n".join(lines), newdoc)
        for node in newdoc:
            if node["names"]:
                document.note_explicit_target(node, node)
        return list(newdoc.children)


def _fields(cls) -> list[str]:
    """A NamedTuple's or a dataclass's (a flax module's) fields."""
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return list(cls._fields)
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls)]
    return []


def check_coverage(app, env):
    documented = set().union(*env.domaindata.get("uorojax_api", {}).values())
    import uorojax

    missing = [f"uorojax.{n}" for n in uorojax.__all__ if f"uorojax.{n}" not in documented]
    if missing:
        logger.warning(
            "public names on no API page (add each to an api-list in docs/api/): "
            + ", ".join(missing)
        )


def purge(app, env, docname):
    env.domaindata.get("uorojax_api", {}).pop(docname, None)


def merge(app, env, docnames, other):
    env.domaindata.setdefault("uorojax_api", {}).update(
        {d: s for d, s in other.domaindata.get("uorojax_api", {}).items() if d in docnames}
    )


_PUBLIC: dict[int, str] | None = None


def _public_names(env) -> dict[int, str]:
    """id(object) -> the name it is documented under, for every documented object."""
    global _PUBLIC
    if _PUBLIC is None:
        _PUBLIC = {}
        for name in env.get_domain("py").objects:
            try:
                obj = resolve(name)
            except Exception:  # noqa: BLE001 (attributes of instances, fields)
                continue
            if inspect.ismodule(obj) or inspect.isclass(obj) or callable(obj):
                _PUBLIC.setdefault(id(obj), name)  # not values: -1, None, ...
    return _PUBLIC


def _candidates(target: str, module: str | None) -> list:
    """The objects a Python reference may mean: as written, in the page's current module,
    under ``uorojax.``, or in the one uorojax module that defines it (a docstring's
    reference to a name of its own module, documented under another module's name)."""
    names = [target]
    if module:
        names.append(f"{module}.{target}")
    names.append(f"uorojax.{target}")
    found = []
    for name in names:
        if name.startswith("uorojax.") or name == "uorojax":
            try:
                found.append(resolve(name))
            except Exception:  # noqa: BLE001 (not importable: not this one)
                pass
    if not found and "." not in target:
        owners = [
            mod
            for key, mod in sorted(sys.modules.items())
            if key.startswith("uorojax.") and mod is not None and target in vars(mod)
        ]
        found = [vars(owners[0])[target]] if len({id(vars(m)[target]) for m in owners}) == 1 else []
    return found


def missing_reference(app, env, node, contnode):
    """A Python reference that Sphinx cannot resolve, when it names a uorojax object:

    * documented under another name (type hints spell the defining module,
      ``uorojax.estimators.base.Estimator``): a link to that entry;
    * not documented (a helper a docstring names, such as ``trace_layout``): its name as
      code, without a link.

    A name that is no uorojax object stays unresolved, a warning that fails the build.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    py = env.get_domain("py")
    for obj in _candidates(target, node.get("py:module")):
        public = _public_names(env).get(id(obj))
        if public is not None:
            # Its entry, by any role: a type hint refers to an alias (ApplyFn, an autodata
            # entry) as a class.
            new = node.deepcopy()
            new["reftarget"] = public
            for role in dict.fromkeys((node["reftype"], "obj")):
                resolved = py.resolve_xref(
                    env, node["refdoc"], app.builder, role, public, new, contnode
                )
                if resolved is not None:
                    return resolved
        else:
            logger.verbose(f"undocumented uorojax name referenced, shown unlinked: {target}")
            return contnode
    return None


def skip_member(app, what, name, obj, skip, options):
    """A NamedTuple's fields: their "Alias for field number i" entries add nothing (the
    class docstring documents the fields)."""
    if type(obj).__name__ == "_tuplegetter":
        return True
    return None


def setup(app):
    app.add_directive("api-list", APIList)
    app.connect("env-updated", check_coverage)
    app.connect("env-purge-doc", purge)
    app.connect("env-merge-info", merge)
    app.connect("missing-reference", missing_reference)
    app.connect("autodoc-skip-member", skip_member)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
