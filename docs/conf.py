"""Sphinx configuration of pvae's documentation site.

Build it with ``./run.sh docs`` (strict: any warning fails the build) into ``docs/_build/html``.
The API reference is generated from the docstrings at build time (``sphinx.ext.autodoc``); the
docstrings are reStructuredText with Sphinx field lists (``:param x:``, ``:returns:``,
``:raises:``), ``.. math::`` blocks and ``:class:``/``:func:``/``:mod:`` roles. The Markdown pages
and the notebooks under ``tutorials/`` are read by MyST-NB; notebooks committed without outputs are
executed during the build (``-D nb_execution_mode=off`` skips that).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document the working tree's pvae, also when it is not installed

import pvae  # noqa: E402

project = "pvae"
author = "pvae contributors"
copyright = "pvae contributors"
release = version = pvae.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

exclude_patterns = ["_build", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# --- Markdown (MyST) and notebooks (MyST-NB) -------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](numbers.md#semi-supervised-m2) links to a heading, as on GitHub
# The committed notebooks carry no outputs; "auto" executes exactly those. Nothing is cached, so
# every build runs them afresh; they read their data from $PVAE_DATA_DIR.
nb_execution_mode = "auto"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True

# --- API reference (autodoc) -----------------------------------------------------------------
autodoc_default_options = {
    "members": True,  # the names in each module's __all__ that the module itself defines
    "show-inheritance": True,
    "member-order": "bysource",
    "no-value": True,  # a registry's repr is a screen of lambdas; the comment above a constant says what it holds
}
autodoc_typehints = "description"  # types go into the field lists beside :param x: texts
autodoc_typehints_description_target = "all"
autodoc_typehints_format = "short"
autodoc_class_signature = "mixed"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # a method without a docstring shows none, not PyTorch's
python_use_unqualified_type_names = True

# --- strict mode (-n) ------------------------------------------------------------------------
# nitpicky: every cross-reference must resolve. There is no network, so no intersphinx
# inventories: references to *third-party* names cannot resolve and are ignored here, by package.
# pvae's own names are never ignored: a docstring that points at a pvae name that does not exist
# fails the build.
nitpicky = True
nitpick_ignore_regex = [
    # PyTorch, Pyro, Graphviz and the standard library, by their full names
    (r"py:(class|func|meth|obj|data|exc)", r"(torch|pyro|graphviz)\..+"),
    (r"py:class", r"(collections\.abc|pathlib|os|argparse)\.[A-Za-z]+"),
    # the same names unqualified, as annotations are written (``Tensor``, ``nn.Module``) where Sphinx
    # shows an annotation without evaluating it (the parameters of a class)
    (r"py:class", r"Tensor|ELBO|nn\.Module|dist\.TorchDistribution|Callable|Sequence"),
]

# --- HTML --------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pvae {release}"


# --- links to files outside docs/ ---------------------------------------------------------------
# The Markdown pages link to the source files (``[`VAE.model`](../pvae/models/vae.py)``) so that the
# links work on GitHub and in an editor. In the site such a link goes to the API reference of the
# name it shows (or of the module, when it shows a path); the build fails if that name is not
# documented. Links to other files (examples, benchmarks) become downloads of the file.
import inspect  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402

from docutils import nodes  # noqa: E402
from sphinx import addnodes  # noqa: E402
from sphinx.util import logging as sphinx_logging  # noqa: E402

sphinx_logger = sphinx_logging.getLogger("pvae.docs")

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MD_LINK = re.compile(r"(\[[^\]]*\]\()([^)\s]+)(\))")


def _module_of(path: Path) -> str | None:
    """``pvae.models.vae`` for ``<root>/pvae/models/vae.py``; None for a file outside ``pvae/``."""
    try:
        parts = path.relative_to(ROOT).with_suffix("").parts
    except ValueError:
        return None
    if path.suffix != ".py" or not parts or parts[0] != "pvae":
        return None
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _source_links_to_api(app, doctree: nodes.document) -> None:
    env = app.env
    for node in list(doctree.findall(addnodes.download_reference)):
        _, abs_path = env.relfn2path(node["reftarget"], env.docname)
        module = _module_of(Path(abs_path).resolve())
        if module is None:
            continue
        text = node.astext().strip().removesuffix("()")
        if _DOTTED.fullmatch(text):
            target, reftype = (text if text.startswith("pvae") else f"{module}.{text}"), "obj"
        else:
            target, reftype = module, "mod"
        xref = addnodes.pending_xref(
            "", refdomain="py", reftype=reftype, reftarget=target, refexplicit=True, refwarn=True,
            refdoc=env.docname,
        )
        xref.source, xref.line = node.source, node.line
        for child in node.children:
            child["classes"] = [c for c in child.get("classes", []) if c != "download"]
            xref += child.deepcopy()
        node.replace_self(xref)


def _readme_links_from_docs(app, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    """Relative links of an included file outside docs/ (the README) made relative to docs/."""
    source = (Path(app.srcdir) / relative_path).resolve()
    if source.parent == Path(app.srcdir).resolve():
        return

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            return match.group(0)
        moved = os.path.relpath(source.parent / target, Path(app.srcdir) / Path(parent_docname).parent)
        return match.group(1) + moved.replace(os.sep, "/") + match.group(3)

    content[0] = _MD_LINK.sub(fix, content[0])


# --- each object documented once, in the module that defines it --------------------------------
# A module's __all__ may re-export names from another module (pvae.models lists VAE, defined in
# pvae.models.vae); autodoc would document them twice. The module being documented is the last one
# whose docstring autodoc processed (a module's docstring is read before its members).
_documenting: dict[str, str] = {}


def _note_module(app, what, name, obj, options, lines) -> None:
    if what == "module":
        _documenting["module"] = name


def _skip_reexports(app, what, name, obj, skip, options) -> bool | None:
    if what != "module" or not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return None
    module = _documenting.get("module")
    home = getattr(obj, "__module__", None)
    return True if module and home and home != module else None


def _type_alias(app, env, node, contnode):
    """An annotation naming a pvae type alias (``program: Program``) is a class reference to a name
    documented as data: resolve it there. Any name pvae does not document still fails."""
    if node.get("refdomain") != "py" or node.get("reftype") != "class":
        return None
    found = env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, "data", node["reftarget"], node, contnode)
    if found is not None and str(found.get("reftitle", "")).startswith("pvae."):
        return found
    return None


def _public_bases(app, name, obj, options, bases: list) -> None:
    """A class's private pvae base (``_LocationScale``) is not documented: show its bases instead."""
    i = 0
    while i < len(bases):
        base = bases[i]
        if getattr(base, "__module__", "").startswith("pvae") and base.__name__.startswith("_"):
            bases[i:i + 1] = [b for b in base.__bases__ if b not in bases]
        else:
            i += 1


# --- field lists that did not render -----------------------------------------------------------
# A field (``:param x:``, ``:returns:``) only starts a field list at the start of a line; written
# after other text (``:param a: ...; :param b: ...``) it is printed as it stands. That is a docstring
# that does not render, so it fails the build like any other warning.
_INLINE_FIELD = re.compile(r"(?<![\w`]):(param|parameter|arg|key|keyword|type|raises?|except|returns?|rtype|var|ivar|cvar|meta)(\s[^:`\n]{1,60})?:(\s|$)")
_LITERAL = (nodes.literal, nodes.literal_block, nodes.doctest_block, nodes.raw, nodes.math, nodes.math_block)


def _check_inline_fields(app, doctree: nodes.document) -> None:
    # A field Sphinx did not turn into "Parameters"/"Returns" (``:param a, b:``) is malformed.
    for name in doctree.findall(nodes.field_name):
        if re.match(r"(param|parameter|arg|type|raises?|returns?|rtype|ivar|var|cvar)\b", name.astext()):
            sphinx_logger.warning("malformed field %r (one name per field)", f":{name.astext()}:",
                                  location=name.parent, type="pvae", subtype="bad_field")
    for text in doctree.findall(nodes.Text):
        parent = text.parent
        if any(isinstance(p, _LITERAL) for p in _ancestors(parent)):
            continue
        match = _INLINE_FIELD.search(text.astext())
        if match:
            sphinx_logger.warning("field %r inside a paragraph: a field starts a line of its own (%r)",
                                  match.group(0).strip(), text.astext()[:80], location=parent,
                                  type="pvae", subtype="inline_field")


def _ancestors(node):
    while node is not None:
        yield node
        node = node.parent


# --- a tutorials section that may be empty ------------------------------------------------------
class _NoTutorialsYet(logging.Filter):
    """Drops the warning that the tutorials toctree's glob matched nothing (there are no notebooks
    yet): an empty section is not a broken link. Every other empty glob still fails the build."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not ("didn't match any documents" in record.getMessage()
                    and "tutorials" in str(getattr(record, "location", "")))


def setup(app):
    logging.getLogger("sphinx.sphinx.directives.other").addFilter(_NoTutorialsYet())
    app.connect("autodoc-process-docstring", _note_module)
    app.connect("autodoc-skip-member", _skip_reexports)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("missing-reference", _type_alias)
    app.connect("include-read", _readme_links_from_docs)
    app.connect("doctree-read", _source_links_to_api, priority=100)  # before downloads are collected
    app.connect("doctree-read", _check_inline_fields)
    return {"parallel_read_safe": True}
