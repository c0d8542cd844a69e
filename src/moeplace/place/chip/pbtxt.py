"""A streaming reader of protobuf text (a tensorflow GraphDef, as Circuit Training writes netlists).

Only what a netlist needs is kept: each `node` block's name, its `input` fields (with their line
numbers) and its `attr { key: ... value { <type>: ... } }` entries. Lines in the usual
one-item-a-line layout take a fast path; other lines go through a small tokenizer. Anything
malformed raises InputError naming the file and line. No protobuf dependency.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from moeplace.errors import InputError

_TOKEN = re.compile(r'\s*(?:(\{)|(\})|([A-Za-z_][\w.]*)\s*:?|"((?:[^"\\]|\\.)*)"|([^\s{}"#]+)|(#.*))')


class PbNode:
    """One parsed `node { ... }` block."""

    __slots__ = ("name", "inputs", "input_lines", "attrs", "line")

    def __init__(self, line: int) -> None:
        self.name: str | None = None
        self.inputs: list[str] = []
        self.input_lines: list[int] = []
        self.attrs: dict[str, object] = {}
        self.line = line


def _unescape(s: str) -> str:
    """Undo backslash escapes in a quoted string."""
    return re.sub(r"\\(.)", r"\1", s) if "\\" in s else s


class PbtxtReader:
    """A streaming reader of a GraphDef in protobuf text: keeps each `node` block's name, inputs, attrs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.nodes: list[PbNode] = []
        self.stack: list[str] = []  # names of the open blocks
        self.node: PbNode | None = None
        self.attr_key: str | None = None
        self.lineno = 0

    def fail(self, reason: str) -> InputError:
        """An InputError naming the file and the current line."""
        return InputError(f"{self.path}:{self.lineno}: {reason}")

    def open_block(self, name: str) -> None:
        """Handle `name {`."""
        if name == "node":
            if self.stack:
                raise self.fail("'node' block inside another block")
            self.node = PbNode(self.lineno)
        elif name == "attr":
            if self.stack != ["node"]:
                raise self.fail("'attr' outside a node")
            self.attr_key = None
        self.stack.append(name)

    def close_block(self) -> None:
        """Handle `}`."""
        if not self.stack:
            raise self.fail("unmatched '}'")
        if self.stack.pop() == "node":
            assert self.node is not None
            if self.node.name is None:
                raise self.fail("node without a name")
            self.nodes.append(self.node)
            self.node = None

    def scalar(self, name: str, value: object) -> None:
        """Handle `name: value` inside the current block."""
        stack = self.stack
        top = stack[-1] if stack else None
        if top == "node":
            assert self.node is not None
            if name == "name":
                self.node.name = str(value)
            elif name == "input":
                self.node.inputs.append(str(value))
                self.node.input_lines.append(self.lineno)
        elif top == "attr":
            if name == "key":
                self.attr_key = str(value)
        elif top == "value" and len(stack) >= 2 and stack[-2] == "attr":
            if self.attr_key is None:
                raise self.fail("attr value before its key")
            assert self.node is not None
            self.node.attrs[self.attr_key] = value
        elif top is None:
            raise self.fail(f"field {name!r} outside any block")

    @staticmethod
    def value_of(text: str) -> object:
        """A scalar's value: a number where it parses as one, else the text (enums, booleans)."""
        try:
            return float(text)
        except ValueError:
            return text

    def line(self, line: str) -> None:
        """Consume one line (fast path for the usual one-item-a-line layout, tokenizer otherwise)."""
        s = line.strip()
        if not s or s[0] == "#":
            return
        if s == "}":
            self.close_block()
            return
        if s[-1] == "{" and s[:-1].rstrip().isidentifier():
            self.open_block(s[:-1].rstrip())
            return
        key, sep, val = s.partition(":")
        if sep and key.isidentifier():
            val = val.strip()
            if val and val[0] == '"' and val[-1] == '"' and val.count('"') == 2 and "\\" not in val:
                self.scalar(key, val[1:-1])
                return
            if val and "{" not in val and "}" not in val and '"' not in val and "#" not in val \
                    and " " not in val:
                self.scalar(key, self.value_of(val))
                return
        self.tokens(line)

    def tokens(self, line: str) -> None:
        """Consume a line with several items (e.g. `attr { key: "x" value { f: 1 } }`)."""
        pending: str | None = None
        pos, n = 0, len(line)
        while pos < n:
            m = _TOKEN.match(line, pos)
            if m is None or m.end() == pos:
                if line[pos:].strip():
                    raise self.fail(f"unexpected text {line[pos:].strip()[:40]!r}")
                break
            pos = m.end()
            ob, cb, ident, string, bare, comment = m.groups()
            if comment is not None:
                break
            if ob is not None:
                if pending is None:
                    raise self.fail("'{' without a field name")
                self.open_block(pending)
                pending = None
            elif cb is not None:
                if pending is not None:
                    raise self.fail(f"field {pending!r} has no value")
                self.close_block()
            elif ident is not None and pending is None:
                pending = ident
            else:
                if pending is None:
                    raise self.fail(f"value {m.group(0).strip()!r} without a field name")
                if string is not None:
                    self.scalar(pending, _unescape(string))
                else:
                    self.scalar(pending, self.value_of(ident if ident is not None else bare))
                pending = None
        if pending is not None:
            raise self.fail(f"field {pending!r} has no value on its line")

    def read(self) -> list[PbNode]:
        """Read the whole file; InputError with file:line on anything malformed."""
        consume = self.line
        try:
            for lineno, text in enumerate(iter_lines(self.path), start=1):
                self.lineno = lineno
                consume(text)
        except (EOFError, OSError, zlib.error) as e:  # unreadable, or a damaged .gz
            raise self.fail(f"cannot read ({getattr(e, 'strerror', None) or e})") from None
        if self.stack:
            raise self.fail(f"file ends inside an open '{self.stack[-1]}' block")
        return self.nodes


def iter_lines(path: Path, chunk: int = 1 << 22) -> Iterator[str]:
    """The lines of a plain or gzipped text file, decoded chunk by chunk (never the whole file at once)."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
        fh.seek(0)
        inflate = zlib.decompressobj(wbits=31) if gz else None
        tail = b""
        while True:
            data = fh.read(chunk)
            if not data:
                break
            if inflate is not None:
                out = inflate.decompress(data)
                while inflate.eof and inflate.unused_data:  # concatenated gzip members
                    rest = inflate.unused_data
                    inflate = zlib.decompressobj(wbits=31)
                    out += inflate.decompress(rest)
                data = out
            lines = (tail + data).split(b"\n")
            tail = lines.pop()
            for raw in lines:
                yield raw.decode("utf-8", errors="replace")
        if inflate is not None and not inflate.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")
        if tail:
            yield tail.decode("utf-8", errors="replace")
