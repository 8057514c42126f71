"""How many real-world APIM policy documents load (and run) in this gateway, and what blocks the rest.

    .venv/bin/python -m bench.corpus [--run] [--documents] [--manifest tests/corpus/manifest.toml]

Every document in the manifest goes through `load_document` with the loader `policies check` builds from
settings (named values, backend ids), here configured once from the manifest so every run is the same. A
`<fragment>` document is checked as `policies fragments apply` checks it (`check_fragment`), under its file's
stem (or the id its manifest entry gives); a document that includes fragments gets, as a user deploying the
sample would have stored them, the fragments beside it (same directory, by stem) and those its manifest entry
maps by id (`fragments = { "id" = "path" }`, for samples whose deployment names them otherwise). A
document either loads, is refused with a `PolicyLoadError`, or crashes the loader (any other exception: a
bug). For refused documents the first error is what a user sees; to rank what to build, the tool also
finds every blocker in the document by taking out what each error names (the value that does not compile,
or the element) and loading again.

`--run` executes each loaded document once (a chat completion, a fake backend answering 200) and reports
what failed at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import re
import tomllib
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.document import Scope, load_document
from policies.errors import PolicyLoadError
from policies.expressions import ExpressionError, compile_value
from policies.policy_set import check_fragment, compile_policy_set
from policies.semantic_cache import CachedAnswer, CacheLookup, CacheQuery
from policies.statement import Loader, elements_of, registered
from policies.xml import PolicyElement, parse
from tests import policy_helpers

MANIFEST = Path(__file__).resolve().parent.parent / "tests" / "corpus" / "manifest.toml"
#: Blockers searched per document before giving up (each step takes one blocker out).
MAX_BLOCKERS = 40
#: A document whose first element is `<fragment>` (well-formed or not: a malformed fragment is still one).
_FRAGMENT_ROOT = re.compile(r"\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*<fragment\b", re.S)


@dataclass(frozen=True)
class Document:
    """One corpus entry: where the file is, whether it is GenAI, and how a deploying user fills it in."""

    file: Path
    genai: bool
    source: str = ""
    scope: str = "api:openai"
    #: Deploy-time placeholders (Bicep `replace()`, Terraform templates) and their fill-ins.
    replace: Mapping[str, str] = field(default_factory=dict)
    #: For `<fragment>` documents: the section their content is written for (to find what blocks them).
    fragment_section: str = "inbound"
    #: Whether the file is a `<fragment>` document (measured as a fragment, never run on its own).
    is_fragment: bool = False
    #: For a fragment: the id documents include it by (default: the file's stem, without `.fragment`).
    fragment_id: str = ""
    #: Fragments by id this document includes that are not beside it under that stem (paths from the manifest).
    fragments: Mapping[str, Path] = field(default_factory=dict)

    def text(self) -> str:
        xml = self.file.read_text(encoding="utf-8")
        for placeholder, value in self.replace.items():
            xml = xml.replace(placeholder, value)
        return xml


@dataclass(frozen=True)
class Corpus:
    loader: Loader
    documents: tuple[Document, ...]

    def loader_for(self, document: Document) -> Loader:
        """The loader a user deploying `document` has: the manifest's settings, and the fragments beside it
        (by id) plus those its entry maps."""
        beside = {d.fragment_id: d.text() for d in self.documents if d.is_fragment and d.file.parent == document.file.parent}
        by_file = {d.file: d for d in self.documents}
        mapped = {fragment_id: by_file[path].text() for fragment_id, path in document.fragments.items()}
        return dataclasses.replace(self.loader, fragments={**beside, **mapped})


def read_manifest(path: Path = MANIFEST) -> Corpus:
    """The documents and the one loader configuration every measurement uses."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    settings = data["loader"]
    loader = Loader(
        named_values=dict(settings["named_values"]),
        backend_ids=frozenset(settings["backend_ids"]),
        embeddings_backend_ids=frozenset(settings["embeddings_backend_ids"]),
    )
    documents = tuple(_document(path.parent, entry) for entry in data["document"])
    return Corpus(loader, documents)


def _document(root: Path, entry: Mapping[str, Any]) -> Document:
    document = Document(
        file=root / entry["file"],
        genai=entry["genai"],
        source=entry["source"],
        scope=entry.get("scope", "api:openai"),
        replace=entry.get("replace", {}),
        fragment_section=entry.get("fragment_section", "inbound"),
        fragments={fragment_id: root / file for fragment_id, file in entry.get("fragments", {}).items()},
    )
    if not _FRAGMENT_ROOT.match(document.text()):
        return document
    stem = document.file.name.removesuffix(".xml").removesuffix(".fragment")
    return dataclasses.replace(document, is_fragment=True, fragment_id=entry.get("fragment_id", stem))


@dataclass(frozen=True)
class LoadResult:
    document: Document
    #: "loads", "refused" or "crashed".
    status: str
    #: The error a user sees (refused) or the exception (crashed); empty when the document loads.
    error: str = ""
    #: Every cause found, the first one first (empty when it loads).
    causes: tuple[str, ...] = ()
    #: Top-level statements, for a document that loads.
    statements: int = 0


def measure_load(document: Document, loader: Loader) -> LoadResult:
    """Load one document as `policies check` does (a fragment as `policies fragments apply` does); never raises."""
    xml = document.text()
    try:
        if document.is_fragment:
            check_fragment(document.fragment_id, xml, loader)
            statements = len(elements_of(parse(xml)))
        else:
            loaded = load_document(xml, Scope.parse(document.scope), loader)
            statements = sum(len(items) for items in loaded.sections.values())
    except PolicyLoadError as exc:
        return LoadResult(document, "refused", str(exc), all_causes(xml, loader, document.fragment_section))
    except Exception as exc:  # a crash is what this tool exists to find; report it, never stop
        return LoadResult(document, "crashed", f"{type(exc).__name__}: {exc}", (f"loader crash: {type(exc).__name__}",))
    return LoadResult(document, "loads", statements=statements)


def all_causes(xml: str, loader: Loader, fragment_section: str) -> tuple[str, ...]:
    """Every blocker: load, note the cause, take out what the error names, load again.

    A fragment is loaded as the section it is written for. Taking out an element also hides what is inside
    it, so nested blockers count only where their parent loads; that is the order in which they would surface
    for a user fixing one at a time.
    """
    causes: list[str] = []
    scope = Scope("global")
    root = _parse_or_none(xml)
    if root is not None and root.tag == "fragment":
        xml = _as_policies(root, fragment_section)
    for _ in range(MAX_BLOCKERS):
        try:
            load_document(xml, scope, loader)
            break
        except PolicyLoadError as exc:
            causes.append(cause_of(exc))
            root = _parse_or_none(xml)
            if root is None:
                break
            element = _find(root, exc.element, exc.line)
            if element is None or not _neutralise(root, element, loader):
                break
            xml = ET.tostring(root, encoding="unicode")
        except Exception as exc:
            causes.append(f"loader crash: {type(exc).__name__}")
            break
    return tuple(dict.fromkeys(causes))


def _parse_or_none(xml: str) -> PolicyElement | None:
    try:
        return parse(xml)
    except PolicyLoadError:
        return None


def _as_policies(fragment: PolicyElement, section: str) -> str:
    """A fragment's content as the one section it is written for, to find what else blocks it."""
    body = "".join(ET.tostring(child, encoding="unicode") for child in fragment)
    return f"<policies><{section}>{body}</{section}></policies>"


def _find(root: PolicyElement, tag: str | None, line: int | None) -> PolicyElement | None:
    """The element an error names (by tag and starting line)."""
    for element in root.iter():
        if isinstance(element, PolicyElement) and element.tag == tag and element.line == line:
            return element
    return None


def _neutral(raw: str) -> str:
    """A stand-in for a value that does not compile: an expression of no fixed type, or the literal without
    its `{{named value}}` markers (some attributes take no expressions)."""
    if raw.strip().startswith("@"):
        return '@(context.Variables["corpus"])'
    return raw.replace("{{", "").replace("}}", "")


def _neutralise(root: PolicyElement, element: PolicyElement, loader: Loader) -> bool:
    """Take the blocker out of the document, keeping as much of the rest as possible; False if stuck.

    A value that does not compile is replaced by a neutral expression (so the statement and what is nested
    in it still load); otherwise the element goes, or, for a part of a statement (a `<value>`, a `<when>`),
    the statement it belongs to.
    """
    replaced = False
    for name, raw in element.attrib.items():
        if _fails(raw, loader):
            element.attrib[name], replaced = _neutral(raw), True
    if element.text and _fails(element.text.strip(), loader):
        element.text, replaced = _neutral(element.text), True
    if replaced:
        return True
    parents = {child: parent for parent in root.iter() for child in parent}
    registry = registered()
    target = element
    while target.tag not in registry and target in parents and parents[target].tag in registry:
        target = parents[target]
    parent = parents.get(target)
    if parent is None:
        return False
    if parent is root:  # a whole section: keep the document, empty the section
        target.clear()
    else:
        parent.remove(target)
    return True


def _fails(raw: str, loader: Loader) -> bool:
    try:
        compile_value(raw, loader.named_values)
    except ExpressionError:
        return True
    return False


#: (pattern over the error message, cause template); `{element}` is the element the error names.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), template)
    for pattern, template in (
        (r"The root element must be <policies>", "<{element}> documents (not <policies>)"),
        (r"Unknown fragment '", "include-fragment of a fragment not in the corpus"),
        (r"In fragment '[^']+': ", "include-fragment of a fragment that does not load"),
        (r"Unknown policy element", "unknown element <{element}>"),
        (r"Multi-statement expressions '@\{", "`@{ … }` multi-statement blocks"),
        (r"Unsupported member '([\w]+)' on ([\w.<>\[\]]+)", "unsupported member {2}.{1}"),
        (r"'(\w+)' is not supported in expression .*: expressions read the context", "`{1}` (object creation / type tests)"),
        (r"Unknown name '(\w+)'", "unknown name `{1}`"),
        (r"Unsupported cast to '([\w.\[\]<>]+)'", "cast to ({1})"),
        (r"Unsupported type argument '([\w.\[\]<>]+)'", "type argument <{1}>"),
        (r"(Lambda|Assignment|Increment|Decrement) \('", "{1} in an expression"),
        (r"Format specifiers and alignment", "format specifiers in interpolated strings"),
        (r"'(\w+)' is a property, not a method", "`{1}` called as a method"),
        (r"'(\w+)' on \w+ is a property, not a method", "`{1}` called as a method"),
        (r"Wrong number of arguments \(\d+\) for '(\w+)'", "arguments of `{1}`"),
        (r"Unknown named argument '([\w-]+)' for '(\w+)'", "named argument {1} of `{2}`"),
        (r"Unknown attribute '([\w:-]+)'", "<{element}> attribute {1}"),
        (r"Attribute '([\w-]+)' is required", "<{element}> without {1}"),
        (r"Attribute '([\w-]+)' does not accept policy expressions", "<{element}> {1} as an expression"),
        (r"Attribute '([\w-]+)' has value .*: expected", "<{element}> {1} value type"),
        (r"Unexpected element inside <([\w-]+)>", "<{element}> inside <{1}>"),
        (r"Not allowed in <([\w-]+)>", "<{element}> in <{1}>"),
        (r"([\w-]+) is not supported \(", "<{element}> {1}"),
        (r"Unknown backend-id", "backend id not configured (manifest)"),
        (r"Named value '.*' is not defined", "named value not configured (manifest)"),
        (r"Malformed XML", "XML not well-formed"),
        (r"Unexpected '([^']+)' at character", "unexpected `{1}` in an expression"),
        (r"Unexpected character '\{'", "`{ … }` initialisers in an expression (arrays, objects)"),
        (r"Unexpected character '(.)'", "unexpected character `{1}` in an expression"),
    )
)


def cause_of(error: PolicyLoadError) -> str:
    """A short, countable name for what blocked loading (the element and the construct, not the values)."""
    message = str(error)
    element = error.element or "?"
    for pattern, template in _CAUSES:
        match = pattern.search(message)
        if match:
            cause = template.replace("{element}", element)
            for index, group in enumerate(match.groups(), 1):
                cause = cause.replace(f"{{{index}}}", group)
            return cause
    text = message.split(": ", 1)[-1] if error.element else message
    return f"<{element}>: {re.sub(r'[0-9]+', 'N', text.split('. ')[0])[:100]}"


#: What `@{ … }` blocks use: the C# an expression engine needs beyond `@( … )` (a document counts once each).
_BLOCK_CONSTRUCTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("locals (`var` and typed declarations)", r"\b(?:var|int|long|double|bool|string|JObject|JArray|JToken|byte\[\])\s+\w+\s*[=;]"),
        ("`if` / `else`", r"\bif\s*\("),
        ("loops (`foreach`, `for`)", r"\b(?:foreach|for)\s*\("),
        ("`switch`", r"\bswitch\s*\("),
        ("`try` / `catch`", r"\btry\s*\{"),
        ("`using (…)` blocks", r"\busing\s*\("),
        ("JSON creation (`new JObject`, `JArray`, `JProperty`)", r"\bnew\s+(?:Newtonsoft\.Json\.Linq\.)?(?:JObject|JArray|JProperty)\b"),
        ("anonymous objects and arrays (`new { }`, `new[]`)", r"\bnew\s*(?:\w+\s*)?\[\s*\]|\bnew\s*\{"),
        ("lambdas and LINQ (`=>`)", r"=>"),
        ("`Convert`, `Encoding`, `BitConverter`", r"\b(?:Convert|Encoding|BitConverter)\."),
        ("hashing and crypto (`SHA256`, `HMACSHA256`, `Decrypt`)", r"SHA256|HMAC|Decrypt|Encrypt"),
        ("`DateTime`, `DateTimeOffset`, `TimeSpan`", r"\b(?:DateTime|DateTimeOffset|TimeSpan)\b"),
        ("`Guid`, `Random`", r"\b(?:Guid|Random)\b"),
        ("`Regex`", r"\bRegex\."),
        ("`JsonConvert`", r"\bJsonConvert\."),
        ("number parsing (`int.Parse`, `TryParse`)", r"\b(?:int|long|double|bool|Int32)\.(?:Try)?Parse"),
        ("string helpers (`string.Join/Format/Concat/IsNullOrEmpty`, `Split`)", r"\b[sS]tring\.(?:Join|Format|Concat|IsNullOrEmpty)|\.Split\("),
    )
)


def block_constructs(xml: str) -> set[str]:
    """The constructs the document's `@{ … }` blocks use (empty when it has none)."""
    text = html.unescape(xml)
    found: set[str] = set()
    for start in (match.end() for match in re.finditer(r"@\{", text)):
        depth, end = 1, start
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        found.update(name for name, pattern in _BLOCK_CONSTRUCTS if pattern.search(text[start:end]))
    return found


@dataclass(frozen=True)
class RunResult:
    document: Document
    #: "ok" (no error: the backend's answer or a policy's own response), "refused" (a statement answered 4xx),
    #: "failed" (an expression or statement error answered 5xx) or "crashed" (an exception escaped the pipeline).
    status: str
    detail: str = ""


class _MissCache:
    """A semantic cache that never hits, so cache statements run their miss path."""

    scope = "subscription"

    async def lookup(self, context: object, query: CacheQuery) -> CacheLookup:
        return CacheLookup("MISS")

    def store(self, ticket: object, answer: CachedAnswer, ttl_seconds: float) -> None:
        return None


async def run_once(document: Document, loader: Loader) -> RunResult:
    """Execute a loaded document once for a chat completion, against a fake backend that answers 200."""
    try:
        pipeline = compile_policy_set({document.scope: document.text()}, 1, loader).pipeline("gold", "openai", "ChatCompletions_Create")
        services = policy_helpers.FakeServices()
        services.semantic_cache = _MissCache()  # type: ignore[attr-defined]
        context = policy_helpers.make_context(services, headers=[("content-type", "application/json"), ("api-key", "key-1")])
        response = await asyncio.wait_for(pipeline.execute(context), timeout=10)
    except Exception as exc:  # reported, never raised: one document must not stop the measurement
        return RunResult(document, "crashed", f"{type(exc).__name__}: {exc}"[:200])
    error = context.LastError
    if error is None:
        return RunResult(document, "ok")
    status = response.status if response is not None else 0
    detail = f"{error.Source}/{error.Reason}: {error.Message}"[:200]
    return RunResult(document, "refused" if 400 <= status < 500 else "failed", detail)


def _ratio(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100 * part / whole:.0f} %)" if whole else "0/0"


def load_table(results: Iterable[LoadResult]) -> list[str]:
    """The summary: documents loading (all / GenAI), then blockers ranked by how many documents they block."""
    results = list(results)
    genai = [r for r in results if r.document.genai]
    lines = [
        "| documents | all | GenAI | other |",
        "|---|---:|---:|---:|",
    ]
    for status in ("loads", "refused", "crashed"):
        counts = [sum(r.status == status for r in group) for group in (results, genai, [r for r in results if not r.document.genai])]
        sizes = (len(results), len(genai), len(results) - len(genai))
        lines.append(f"| {status} | " + " | ".join(_ratio(c, n) for c, n in zip(counts, sizes)) + " |")
    lines += ["", "| source | loads |", "|---|---:|"]
    for source in sorted({r.document.source for r in results}):
        group = [r for r in results if r.document.source == source]
        lines.append(f"| {source} | {_ratio(sum(r.status == 'loads' for r in group), len(group))} |")
    lines += ["", "Blockers (documents containing it; only: documents it alone blocks; first: documents where a user meets it first):", ""]
    lines += ["| cause | all | GenAI | only | first |", "|---|---:|---:|---:|---:|"]
    blocked = [r for r in results if r.status != "loads"]
    every = Counter(c for r in blocked for c in r.causes)
    in_genai = Counter(c for r in blocked if r.document.genai for c in r.causes)
    only = Counter(r.causes[0] for r in blocked if len(r.causes) == 1)
    first = Counter(r.causes[0] for r in blocked if r.causes)
    for cause, count in sorted(every.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"| {cause} | {count} | {in_genai[cause]} | {only[cause]} | {first[cause]} |")
    constructs = [(r.document.genai, block_constructs(r.document.text())) for r in results]
    lines += ["", f"Inside `@{{ … }}` blocks ({sum(bool(c) for _, c in constructs)} documents have them):", ""]
    lines += ["| construct | all | GenAI |", "|---|---:|---:|"]
    used = Counter(name for _, names in constructs for name in names)
    used_genai = Counter(name for genai, names in constructs if genai for name in names)
    lines += [f"| {name} | {count} | {used_genai[name]} |" for name, count in used.most_common()]
    return lines


def run_table(results: Iterable[RunResult]) -> list[str]:
    results = list(results)
    lines = ["| run outcome | documents |", "|---|---:|"]
    for status in ("ok", "refused", "failed", "crashed"):
        lines.append(f"| {status} | {sum(r.status == status for r in results)} |")
    problems = Counter(_run_cause(r.detail) for r in results if r.status in ("failed", "crashed"))
    if problems:
        lines += ["", "| run-time failure | documents |", "|---|---:|"]
        lines += [f"| {cause} | {count} |" for cause, count in problems.most_common()]
    return lines


def _run_cause(detail: str) -> str:
    return re.sub(r"'[^']*'", "'…'", detail.split(" in expression ")[0])[:120]


def document_lines(results: Iterable[LoadResult], root: Path) -> list[str]:
    return [f"{r.status:8} {r.document.file.relative_to(root)}: {'; '.join(r.causes) or r.statements}" for r in results]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    parser.add_argument("--run", action="store_true", help="also execute each loaded document once against a fake backend")
    parser.add_argument("--documents", action="store_true", help="list every document with its outcome")
    args = parser.parse_args(argv)
    corpus = read_manifest(args.manifest)
    results = [measure_load(document, corpus.loader_for(document)) for document in corpus.documents]
    print("\n".join(load_table(results)))
    if args.documents:
        print("\n" + "\n".join(document_lines(results, args.manifest.parent)))
    if args.run:
        loaded = [r.document for r in results if r.status == "loads" and not r.document.is_fragment]
        runs = [asyncio.run(run_once(document, corpus.loader_for(document))) for document in loaded]
        print("\n" + "\n".join(run_table(runs)))
        if args.documents:
            print("\n" + "\n".join(f"{r.status:8} {r.document.file.relative_to(args.manifest.parent)}: {r.detail}" for r in runs))


if __name__ == "__main__":
    main()
