"""Hostile strings from a model, the data or a plugin in the SARIF, JUnit XML, Markdown and
JSON reports: each document parses with a real parser (jsonschema, ``xml.etree``,
markdown-it-py), keeps its structure and shows every string as text. The HTML report's
escaping is tested in tests/test_reports.py and tests/test_reports_html.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import numpy as np
import onnx
import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token
from test_reports import HASH, make_report, model_info
from test_reports_formats import SARIF_SCHEMA, assert_valid_sarif, parse_junit

from audit_core.analysis import Analysis, Requirements
from audit_core.findings import (
    Evidence,
    Finding,
    Method,
    Metric,
    Severity,
    Status,
    Threshold,
)
from audit_core.hookspecs import hookimpl
from audit_core.report_model import AnalysisRun, AuditReport, DataInfo, PluginInfo
from audit_core.testing import mlp_onnx, random_mlp, save_dataset
from audit_reports import markdown
from audit_reports.json_report import render_json, to_dict, validate
from audit_reports.junit import render_junit
from audit_reports.markdown import render_markdown
from audit_reports.sarif import render_sarif
from audit_reports.writer import FORMATS, RENDERERS, OutputFormat, write_reports

HOSTILE: dict[str, str] = {
    "nul": "nul\x00byte",
    "c0": "c0 " + "".join(map(chr, [*range(1, 9), 0x0B, 0x0C, *range(0x0E, 0x20)])) + " end",
    "del-c1": "del\x7f c1\x80\x9f next\x85line",
    "nonchar": "non\ufffecharacters\uffff",
    "surrogate": "lone \ud800 high, \udcff escaped byte, \ude00\ud83d reversed pair",
    "xml": '</testcase><x a="1">]]><![CDATA[ &amp; & " \' &#0;',
    "pipe": "a | b || c |",
    "backtick": "`code` ``double`` ```fence``` `",
    "script": "<script>alert(1)</script>",
    "img": "<img src=x onerror=alert(1)>",
    "link": "[click](javascript:alert(1)) [r][1] <http://evil>",
    "image": "![x](http://evil/x.png)",
    "newline": "one\ntwo\r\nthree\rfour",
    "block": "# heading\n- item\n> quote\n1. one\n---\n===\n```\nfenced\n    indented",
    "sarif": "{0} {1}} {{2}} [text](1) a]\\(b ]\\\\(c",
    "emphasis": "*a* _b_ **c** ~~d~~ @team #1 :smile: \\",
    "rtl": "abc\u202edef\u202c ghi",
    "emoji": "😀 👍🏽 🏳️‍🌈",
    "long": "word " * 3000,
}
HOSTILE["all"] = " ".join(HOSTILE.values())

CASES = pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())

JUNIT_TAGS = {"testsuites", "testsuite", "properties", "property", "testcase"}
JUNIT_TAGS |= {"failure", "error", "skipped", "system-out"}


# ---------------------------------------------------------------- expected text


def utf8(text: str) -> str:
    """``text`` as UTF-8 can carry it: each lone surrogate -> U+FFFD (the cases hold no
    surrogate pair)."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text)


def xml_chars(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot carry (its ``Char`` production) -> U+FFFD."""

    def legal(c: str) -> bool:
        code = ord(c)
        return c in "\t\n\r" or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code > 0xFFFF

    return "".join(c if legal(c) else "\ufffd" for c in text)


def xml_content(text: str) -> str:
    """``text`` as an XML parser hands back element content: line ends normalised to ``\\n``
    (XML 1.0 section 2.11; attribute values keep ``\\r`` as ``&#13;``)."""
    return xml_chars(text).replace("\r\n", "\n").replace("\r", "\n")


def md_line(text: str) -> str:
    """What a Markdown cell or line shows of ``text``: on one line, control characters and
    lone surrogates as U+FFFD."""
    return re.sub("[\x00-\x1f\x7f-\x9f\ud800-\udfff]", "\ufffd", " ".join(text.split()))


def sarif_shown(message: str) -> str:
    """A SARIF plain text message as a viewer shows it: ``{{``/``}}`` are braces and a
    backslash after ``]`` (with the backslashes doubled) only broke a ``](``."""
    unbroken = re.sub(r"(?<=\])((?:\\\\)*)\\\(", lambda m: m[1][: len(m[1]) // 2] + "(", message)
    return unbroken.replace("{{", "{").replace("}}", "}")


def deep_utf8(value: Any) -> Any:
    """``value`` (JSON data) with ``utf8`` applied to every string, keys included."""
    if isinstance(value, dict):
        return {utf8(k): deep_utf8(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_utf8(v) for v in value]
    return utf8(value) if isinstance(value, str) else value


# ---------------------------------------------------------------- the report


def hostile_report(text: str) -> AuditReport:
    """A report with ``text`` in every string a model, the data or a plugin supplies: model
    name, path, producer, metadata and layers; data source and class names; analysis name,
    title, plugin, description, headline and skip reason; finding title, summary, model,
    metric names, units and values, threshold, remediation, notes and traceback."""
    model = dataclasses.replace(
        model_info(text, metadata={text: text, "doc_string": text}),
        path=f"models/{text}.onnx",
        producer=text,
        layers=(text,),
    )
    failed = Finding(
        id=f"{text}/check/{text}",
        analysis=text,
        title=text,
        severity=Severity.HIGH,
        status=Status.FAIL,
        method=Method.EMPIRICAL,
        summary=text,
        model=text,
        metrics=(Metric(text, 0.5, text, text), Metric("label", text)),
        threshold=Threshold(text, ">=", 1.0),
        evidence=Evidence(notes=(text,)),
        remediation=text,
    )
    crashed = dataclasses.replace(
        failed, id=f"{text}/error", status=Status.ERROR, traceback=text, metrics=()
    )
    return make_report(
        models=(model,),
        data=DataInfo(text, 1, (1,), 0.0, 1.0, (text, text)),
        plugins=(PluginInfo(text, text, (text,), (text,), error=text),),
        analyses=(
            AnalysisRun(text, text, text, text, "ran", headline=text, description=text),
            AnalysisRun("quiet", text, text, text, "skipped", reason=text),
        ),
        findings=(failed, crashed),
        settings={text: text},
        command=("audit", text),
    )


# ---------------------------------------------------------------- JSON and writing


@CASES
def test_json_carries_hostile_strings(text: str) -> None:
    report = hostile_report(text)
    document = json.loads(render_json(report))
    validate(document)
    assert document == deep_utf8(to_dict(report))  # everything round-trips but surrogates
    assert document["models"][0]["metadata"] == {utf8(text): utf8(text), "doc_string": utf8(text)}
    assert document["data"]["class_names"] == [utf8(text)] * 2


@CASES
def test_every_format_writes_hostile_strings_as_utf8(text: str, tmp_path: Path) -> None:
    paths = write_reports(hostile_report(text), tmp_path, FORMATS)
    for path in paths:
        path.read_bytes().decode("utf-8")  # strict: no surrogate was written


def test_the_writer_replaces_a_lone_surrogate_any_renderer_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaky = OutputFormat("report.json", lambda _: "a\ud800b\udcff")
    monkeypatch.setitem(RENDERERS, "json", leaky)
    (path,) = write_reports(make_report(), tmp_path, ["json"])
    assert path.read_text(encoding="utf-8") == "a\ufffdb\ufffd"


# ---------------------------------------------------------------- SARIF


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text(encoding="utf-8")))


def sarif_messages(value: Any) -> Iterator[str]:
    """The text of every message and multiformat message string in a SARIF document."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in {"message", "shortDescription", "fullDescription", "description"}:
                yield item["text"]
            else:
                yield from sarif_messages(item)
    elif isinstance(value, list):
        for item in value:
            yield from sarif_messages(item)


@CASES
def test_sarif_carries_hostile_strings(text: str, sarif_validator) -> None:
    document = json.loads(render_sarif(hostile_report(text), base="/"))
    assert_valid_sarif(sarif_validator, document)
    shown = utf8(text)
    run = document["runs"][0]
    rule = run["tool"]["driver"]["rules"][0]
    assert rule["id"] == shown and rule["properties"]["plugin"] == shown
    assert sarif_shown(rule["shortDescription"]["text"]) == shown
    assert sarif_shown(rule["fullDescription"]["text"]) == shown
    failed, crashed = run["results"]
    assert sarif_shown(failed["message"]["text"]) == f"{shown} [{shown}]: {shown}"
    assert sarif_shown(crashed["message"]["text"]) == f"crashed: {shown} [{shown}]: {shown}"
    properties = failed["properties"]
    assert properties["title"] == properties["model"] == properties["remediation"] == shown
    assert properties["metrics"] == {shown: 0.5, "label": shown}
    (note,) = run["invocations"][0]["toolExecutionNotifications"]
    assert sarif_shown(note["message"]["text"]) == f"{shown} crashed: {shown}"
    assert sarif_shown(run["artifacts"][0]["description"]["text"]) == f"ONNX model {shown}"


@CASES
def test_sarif_messages_have_no_placeholder_or_embedded_link(text: str) -> None:
    """SARIF 2.1.0 section 3.11.5: a literal brace is doubled (``{0}`` is a placeholder);
    section 3.11.6: ``[text](target)`` is an embedded link in a plain text message."""
    document = json.loads(render_sarif(hostile_report(text), base="/"))
    messages = list(sarif_messages(document))
    assert len(messages) >= 6
    for message in messages:
        assert not set(re.sub(r"\{\{|\}\}", "", message)) & {"{", "}"}, message
        assert "](" not in message


def test_sarif_uri_of_a_file_name_that_is_not_utf8(tmp_path: Path) -> None:
    """A name decoded with surrogate escapes (``os.fsdecode``) gets its own bytes back."""
    name = os.fsdecode(b"caf\xe9 [1].onnx")
    model = dataclasses.replace(model_info("m"), path=str(tmp_path / name))
    report = make_report(models=(model,), findings=())
    inside = json.loads(render_sarif(report, base=tmp_path))["runs"][0]["artifacts"][0]
    assert inside["location"]["uri"] == "caf%E9%20%5B1%5D.onnx"
    outside = json.loads(render_sarif(report, base="/nowhere"))["runs"][0]["artifacts"][0]
    assert outside["location"]["uri"] == (tmp_path / name).as_uri()
    assert outside["location"]["uri"].endswith("/caf%E9%20%5B1%5D.onnx")


# ---------------------------------------------------------------- JUnit XML


@CASES
def test_junit_carries_hostile_strings(text: str) -> None:
    rendered = render_junit(hostile_report(text))
    root = parse_junit(rendered)
    assert {element.tag for element in root.iter()} <= JUNIT_TAGS  # no markup got in
    attribute, content = xml_chars(text), xml_content(text)
    suite, quiet = root.findall("testsuite")
    assert suite.get("name") == attribute and quiet.get("name") == "quiet"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties == dict.fromkeys(("title", "plugin", "description"), attribute)
    failed, crashed = suite.findall("testcase")
    assert failed.get("classname") == attribute
    assert failed.get("name") == f"{attribute} [{attribute}]"
    failure = failed.find("failure")
    assert failure.get("message") == attribute
    assert failure.text.startswith(f"FAIL (high, empirical): {content}\nfinding: ")
    assert f"  {content} = 0.5 {content}\n" in failure.text
    assert f"threshold: {content} >= 1" in failure.text
    assert failure.text.endswith(f"remediation: {content}")
    error = crashed.find("error")
    assert error.text == content and error.get("message") == attribute
    assert quiet.find("testcase/skipped").get("message") == attribute
    totals = {key: root.get(key) for key in ("tests", "failures", "errors", "skipped")}
    assert totals == {"tests": "3", "failures": "1", "errors": "1", "skipped": "1"}


def test_junit_writes_no_illegal_character_raw() -> None:
    rendered = render_junit(hostile_report(HOSTILE["all"]))
    assert xml_chars(rendered) == rendered
    assert "<x " not in rendered and "]]>" not in rendered and "<![CDATA[" not in rendered


# ---------------------------------------------------------------- Markdown

MARKDOWN = MarkdownIt("commonmark").enable(["table", "strikethrough"])
"""CommonMark with GFM tables and strike-through; raw HTML allowed (``html=True``), so a
tag that got through would show up as an ``html_inline`` or ``html_block`` token."""


def walk(tokens: list[Token]) -> Iterator[Token]:
    for token in tokens:
        yield token
        yield from walk(token.children or [])


def shown(inline: Token) -> str:
    """The text an inline token shows (markup, entities and escapes resolved)."""
    return "".join(t.content for t in walk([inline]) if t.type in {"text", "code_inline"})


def table_cells(tokens: list[Token]) -> list[list[str]]:
    """Each table row as the text its cells show."""
    rows: list[list[str]] = []
    for i, token in enumerate(tokens):
        if token.type == "tr_open":
            rows.append([])
        elif token.type in {"th_open", "td_open"}:
            rows[-1].append(shown(tokens[i + 1]) if tokens[i + 1].type == "inline" else "")
    return rows


@CASES
def test_markdown_keeps_its_structure(text: str) -> None:
    source = render_markdown(hostile_report(text))
    tokens = MARKDOWN.parse(source)
    kinds = [t.type for t in walk(tokens)]
    for kind in ("html_block", "html_inline", "link_open", "image", "fence", "code_block"):
        assert kind not in kinds, kind
    for kind in ("blockquote_open", "hr", "ordered_list_open", "s_open"):
        assert kind not in kinds, kind
    assert kinds.count("em_open") == 1 and kinds.count("strong_open") == 5  # the report's own
    assert [t.tag for t in tokens if t.type == "heading_open"] == ["h2", "h3", "h3"]
    assert kinds.count("bullet_list_open") == 1 and kinds.count("list_item_open") == 2
    assert kinds.count("table_open") == 1
    rows = table_cells(tokens)
    assert len(rows) == 3 and {len(row) for row in rows} == {6}
    code = [t.content for t in walk(tokens) if t.type == "code_inline"]
    assert code == ["--fail-on high", HASH[:12], "report.html", "report.json"]
    html = MARKDOWN.render(source)
    assert "<script" not in html and "<img" not in html and "<a " not in html


@CASES
def test_markdown_shows_hostile_strings_as_text(text: str) -> None:
    tokens = MARKDOWN.parse(render_markdown(hostile_report(text)))
    line = md_line(text)
    _, crashed, failed = table_cells(tokens)
    ran, skipped = (
        shown(tokens[i + 2]) for i, t in enumerate(tokens) if t.type == "list_item_open"
    )
    if len(line) > 60:  # cut at a word in every cell
        assert failed[3].endswith("…") and len(failed[3]) <= 60
        assert len(failed[4]) <= 80 + 2 + markdown.MAX_CELL
        return
    assert crashed[2:4] == failed[2:4] == [line, line]
    assert crashed[4] == failed[4] == f"{line}: {line}"
    assert ran == f"{line} ({line}): ran: {line}"
    assert skipped == f"quiet ({line}): skipped: {line}"
    if len(line) <= 20:  # a unit is cut at 20 characters
        assert failed[5] == f"{line} = 0.5 {line}"


def test_markdown_cell_escapes() -> None:
    assert markdown.md("a\x00b\x1bc\ud800") == "a\ufffdb\ufffdc\ufffd"
    assert markdown.md("x | `y` ``` <b> & [l](u)") == (
        "x \\| \\`y\\` \\`\\`\\` &lt;b&gt; &amp; \\[l\\](u)"
    )


# ---------------------------------------------------------------- the CLI, end to end

LOUD = HOSTILE["all"].replace("\ud800", "").replace("\udcff", "").replace("\ude00", "")
LOUD = LOUD.replace("\ud83d", "").replace(HOSTILE["long"], "long " * 50)
"""The hostile text without surrogates (protobuf cannot carry them) and shorter."""


class _Echo(Analysis):
    """Reports what the model and the data say about themselves, verbatim."""

    name = "echo"
    title = LOUD
    description = LOUD
    requires = Requirements(data=True, layer_graph=False)

    def run(self, ctx):
        proto = ctx.model.loaded.proto
        said = [*ctx.model.loaded.metadata.values(), proto.doc_string, proto.graph.name]
        said += [node.name for node in proto.graph.node]
        yield ctx.finding(
            "echo",
            title=LOUD,
            status=Status.FAIL,
            severity=Severity.HIGH,
            method=Method.EMPIRICAL,
            summary=f"{LOUD} {ctx.model.name} {' '.join(ctx.data.class_names)}",
            metrics=[Metric(LOUD, 1.0, LOUD)],
            evidence=Evidence(notes=tuple(said)),
            remediation=LOUD,
        )


def hostile_model(directory: Path) -> Path:
    """A tiny MLP whose metadata, doc string, producer, graph and node names are ``LOUD``,
    in a file whose name has Markdown, HTML and a byte that is not UTF-8."""
    weights, biases = random_mlp([4, 6, 3], seed=1)
    plain = mlp_onnx(directory / "plain.onnx", weights, biases, metadata={LOUD: LOUD})
    proto = onnx.load(plain)
    proto.doc_string = proto.producer_name = proto.graph.name = LOUD
    for node in proto.graph.node:
        node.name = f"{LOUD} {node.name}"
    path = directory / os.fsdecode(b"m|`[x](javascript:alert(1))`<b>{0}\xff.onnx")
    path.write_bytes(proto.SerializeToString())
    plain.unlink()
    return path


def test_cli_writes_every_format_for_a_hostile_model(
    run_audit, audit_register_plugin, tmp_path: Path, sarif_validator
) -> None:
    model = hostile_model(tmp_path)
    rng = np.random.default_rng(0)
    names = [f"{LOUD} {i}" for i in range(3)]
    data = save_dataset(tmp_path / "d.npz", rng.random((6, 4)), [0, 1, 2] * 2, class_names=names)

    @hookimpl
    def audit_register_analyses(register):
        register(_Echo())

    audit_register_plugin(SimpleNamespace(audit_register_analyses=audit_register_analyses), "echo")
    formats = ",".join(FORMATS)
    run = run_audit(model, "--data", data, "--format", formats, "--fail-on", "high", plugins=[])
    assert run.exit_code == 1, run.stderr
    name = utf8(Path(os.fsdecode(model)).stem)
    document = json.loads((run.out_dir / "report.json").read_text(encoding="utf-8"))
    validate(document)
    assert document["models"][0]["name"] == name
    assert document["models"][0]["metadata"] == {LOUD: LOUD}
    assert document["models"][0]["producer"].startswith(LOUD)
    (finding,) = document["findings"]
    assert finding["summary"] == f"{LOUD} {name} {' '.join(names)}"
    assert finding["evidence"]["notes"][:3] == [LOUD] * 3
    sarif = json.loads((run.out_dir / "report.sarif").read_text(encoding="utf-8"))
    assert_valid_sarif(sarif_validator, sarif)
    (result,) = sarif["runs"][0]["results"]
    assert sarif_shown(result["message"]["text"]).startswith(f"{LOUD} [{name}]: {LOUD}")
    uri = sarif["runs"][0]["artifacts"][0]["location"]["uri"]
    assert uri == "m%7C%60%5Bx%5D%28javascript%3Aalert%281%29%29%60%3Cb%3E%7B0%7D%FF.onnx"
    root = parse_junit((run.out_dir / "report.junit.xml").read_text(encoding="utf-8"))
    assert root.find("testsuite/testcase/failure").get("message").startswith(xml_chars(LOUD))
    tokens = MARKDOWN.parse((run.out_dir / "report.md").read_text(encoding="utf-8"))
    assert {len(row) for row in table_cells(tokens)} == {6}
    assert not {"html_inline", "html_block", "link_open", "image"} & {t.type for t in walk(tokens)}
    html = (run.out_dir / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html and "<img src=x" not in html
