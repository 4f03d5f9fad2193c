"""The user-facing Markdown: no development-machine paths, no words about how the work was
organised, and no relative link or picture that points at a missing file or heading."""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

import vqdraw

ROOT = Path(__file__).resolve().parents[1]

# Absolute paths of a development machine, and the sibling checkout of shared files.
MACHINE_PATHS = re.compile(r"/work/|/root/|/home/\w+/|\.\./shared/")
# Words about the process of making the project, not about using it.
PROCESS_WORDS = re.compile(r"\bsessions?\b|\bagents?\b|\bthis round\b|\blent\b|\bthis machine\b"
                           r"|\bissues? \d+", re.IGNORECASE)

FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,}).*?^\1\2[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HTML_SOURCE = re.compile(r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']",
                         re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", re.MULTILINE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def user_docs(root: Path = ROOT) -> list[Path]:
    """README.md, docs/**/*.md, benchmarks/README.md and the Markdown shipped in the package."""
    files = [root / "README.md", root / "benchmarks" / "README.md"]
    files += sorted((root / "docs").rglob("*.md"))
    files += sorted((root / "src" / "vqdraw").rglob("*.md"))
    return [f for f in files if f.is_file()]


def _without_code(text: str) -> str:
    """Text with fenced blocks and inline code blanked (their brackets are not links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its words
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    kept = "".join(c for c in text
                   if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for heading in HEADING.findall(_without_code(path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def link_targets(text: str) -> list[str]:
    """Link and picture targets of Markdown text (inline, reference-style and HTML), code excluded."""
    text = _without_code(text)
    return (INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text) + HTML_SOURCE.findall(text))


def dead_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative targets in `path` whose file, or whose heading in a Markdown file, does not exist."""
    dead = []
    for target in link_targets(path.read_text(encoding="utf-8")):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a web address (or mailto:): not checked offline
        file_part, _, fragment = target.partition("#")
        file_part = unquote(file_part.split("?", 1)[0])
        if file_part.startswith("/"):
            dest = root / file_part.lstrip("/")
        else:
            dest = (path.parent / file_part) if file_part else path
        if not dest.exists():
            dead.append(target)
        elif fragment and dest.suffix.lower() == ".md" and unquote(fragment).lower() not in anchors(dest):
            dead.append(target)
    return dead


def offending_lines(path: Path) -> list[tuple[int, str, str]]:
    """(line number, what matched, the line) for each development-machine path or process word."""
    bad = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for pattern in (MACHINE_PATHS, PROCESS_WORDS):
            bad += [(number, match.group(0), line.strip()[:120]) for match in pattern.finditer(line)]
    return bad


DOCS = user_docs()


def test_the_user_docs_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "benchmarks/README.md", "docs/architecture.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_development_paths_or_process_words(path):
    assert offending_lines(path) == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_and_pictures_exist(path):
    assert dead_links(path) == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    (tmp_path / "docs" / "images").mkdir(parents=True)
    (tmp_path / "docs" / "images" / "a.png").write_bytes(b"")
    (tmp_path / "docs" / "other.md").write_text("# Memory per preset (Table 1 batch)\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "![ok](images/a.png) ![gone](images/b.png) [ok](other.md#memory-per-preset-table-1-batch)\n"
        "[second](other.md#twice-1) [no heading](other.md#nothing) [web](https://example.org/x.md)\n"
        '<img src="images/missing.png">\n\n[ref]: ../README.md\n'
        "`[not a link](nowhere.md)`\n\n```\n[not a link either](nowhere.md)\n```\n"
        "Run `vqdraw eval /work/runs/bench`; in this session; cd ../shared/tools; agents; issue 17.\n"
        "A line about /tmp/data, excellent results and issues in general.\n")
    assert sorted(dead_links(page, root=tmp_path)) == sorted(
        ["images/b.png", "other.md#nothing", "images/missing.png", "../README.md"])
    number = next(i for i, line in enumerate(page.read_text().splitlines(), 1) if "vqdraw eval" in line)
    assert [(n, found) for n, found, _ in offending_lines(page)] == [
        (number, "/work/"), (number, "../shared/"), (number, "session"), (number, "agents"),
        (number, "issue 17")]


def test_citation_file_matches_the_package():
    text = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    top = dict(re.findall(r"^([a-z-]+):[ \t]*(\S.*?)[ \t]*$", text, re.MULTILINE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert top["cff-version"] == "1.2.0"
    assert top["title"] == project["name"] == "vqdraw"
    assert top["version"] == vqdraw.__version__
    licence = project["license"]
    assert top["license"] == (licence if isinstance(licence, str) else licence["text"])
    paper = text[text.index("preferred-citation:"):]
    assert 'title: "VQ-DRAW: A Sequential Discrete VAE"' in paper
    assert "family-names: Nichol" in paper and "year: 2020" in paper
    assert "arXiv:2003.01599" in paper and "https://arxiv.org/abs/2003.01599" in paper


@functools.cache
def _cli_options() -> dict[str, set[str]]:
    """Every verb of `vqdraw` and the option strings it accepts (its sub-commands' included)."""
    import argparse

    from vqdraw.cli import build_parser

    def options(parser: argparse.ArgumentParser) -> set[str]:
        found: set[str] = set()
        for action in parser._actions:
            found |= set(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found |= options(sub)
        return found

    verbs = next(a for a in build_parser("*")._actions if isinstance(a, argparse._SubParsersAction))
    return {name: options(sub) for name, sub in verbs.choices.items()}


COMMAND = re.compile(r"(?:^|(?<=[\s;(&|]))(?<!from )(?<!import )vqdraw[ \t]+([a-z][a-z0-9-]*)([^#;|&)\n]*)", re.MULTILINE)


def documented_commands(text: str) -> list[tuple[str, list[str], str]]:
    """(verb, --options, command) of every `vqdraw VERB ...` inside code (blocks or inline spans)."""
    code = [m.group(0) for m in FENCE.finditer(text)]
    code += [m.group(0).strip("`") for m in INLINE_CODE.finditer(FENCE.sub("", text))]
    found = []
    for segment in code:
        segment = re.sub(r"\\\n[ \t]*", " ", segment)  # shell line continuations
        for m in COMMAND.finditer(segment):
            flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(2))
            found.append((m.group(1), flags, m.group(0).strip()[:140]))
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_documented_commands_use_real_verbs_and_options(path):
    accepted = _cli_options()
    wrong = []
    for verb, flags, command in documented_commands(path.read_text(encoding="utf-8")):
        if verb not in accepted:
            wrong.append(f"unknown verb {verb!r}: {command}")
        wrong += [f"{verb} has no {flag}: {command}" for flag in flags if flag not in accepted[verb]]
    assert wrong == []


def test_the_command_check_reads_code_only():
    text = ("vqdraw reads files (prose)\n`vqdraw train --preset mnist [--progressive 2]`\n"
            "```sh\nvqdraw baseline vqvae --codebook 2 \\\n    --steps 10   # --not-a-flag\n"
            "for M in a b; do vqdraw probe --model $M; done\npython -m vqdraw.cli train --x\n"
            "from vqdraw import VQDraw\n```\n")
    assert [(verb, flags) for verb, flags, _ in documented_commands(text)] == [
        ("baseline", ["--codebook", "--steps"]), ("probe", ["--model"]),
        ("train", ["--preset", "--progressive"])]
    accepted = _cli_options()
    assert {"--preset", "--progressive", "--run"} <= accepted["train"]
    assert "--codebook" in accepted["baseline"] and "--stages" not in accepted["eval"]
