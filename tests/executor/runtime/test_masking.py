"""Masking as pure logic: every form of a secret, a multi-line key line by line, a stream cut at
any byte, and the structured report. Assertions name what leaked, never quote it."""
from __future__ import annotations

import base64
import json
import os
import random

from hypothesis import given, settings, strategies as st

from executor.runtime.masking import MASK, MIN_LINE_LENGTH, Masker, base64_middles, encodings, families
from executor.runtime.tasks import PreparedTask


def pem_shaped_key(body_bytes: int = 1218) -> str:
    """A fresh random stand-in for a PKCS#8 private key: armour, 64-column base64, ~1.7 KB."""
    body = base64.b64encode(os.urandom(body_bytes)).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"


# So many characters of a line of base64 identify it (96 bits): a piece a bad cut would leave.
IDENTIFYING_PIECE = 16


def leaks(secret: str, text: str) -> list[str]:
    """Which parts of SECRET can be read in TEXT, by name: the value, or one of its lines of
    MIN_LINE_LENGTH or more, whole, or any IDENTIFYING_PIECE characters of it."""
    found = ["the whole value"] if secret in text else []
    for number, line in enumerate(secret.splitlines(), 1):
        line = line.strip()
        if len(line) < MIN_LINE_LENGTH or line.startswith("-----"):
            continue
        size = min(len(line), IDENTIFYING_PIECE)
        if any(line[i:i + size] in text for i in range(len(line) - size + 1)):
            found.append(f"line {number}")
    return found


def first_difference(a: bytes, b: bytes) -> int | None:
    """Where two outputs part, for a failure message that shows no secret."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


KEY = pem_shaped_key()
PASSWORD = 'p@ss"w/rd-42 &x'


def noisy_output(key: str, password: str) -> str:
    """What a task might print around its secrets: the key whole, JSON-escaped in a recipe echo,
    one line quoted in an error, the password in a URI and in JSON, between ordinary lines."""
    body = key.splitlines()[1:-1]
    return "".join([
        "[2024-05-01 12:00:00,001] INFO {datahub.ingestion.run.pipeline:101} - starting\n",
        "loaded key:\n", key,
        "recipe: " + json.dumps({"source": {"config": {"private_key": key, "password": password}}}) + "\n",
        f"ERROR could not parse key: bad padding near {body[3]} (line 4)\n",
        "uri=snowflake://user:" + "p%40ss%22w%2Frd-42%20%26x" + "@account/db\n",
        "[2024-05-01 12:00:01,002] INFO {datahub.ingestion.run.pipeline:140} - done\n",
    ])


def test_a_multi_line_key_is_masked_whole_json_escaped_and_line_by_line():
    masker = Masker([KEY, PASSWORD])
    masked = masker.mask(noisy_output(KEY, PASSWORD))
    leaked = leaks(KEY, masked) + leaks(PASSWORD, masked)
    assert not leaked, f"readable in the masked output: {leaked}"
    masks = masked.count(MASK)
    assert masks == 5, "the key, the recipe's key and password (one run: adjacent), the quoted line, the URI"
    assert "starting" in masked and "done" in masked and "bad padding near" in masked


def test_armour_and_short_lines_of_a_key_are_not_masked_on_their_own():
    masker = Masker([KEY])
    text = "expected -----BEGIN PRIVATE KEY----- here; a short line: Zg==\n"
    assert masker.mask(text) == text, "armour is the same in every key; a short line identifies nothing"
    assert Masker(["abc\nshort\nline-long-enough-to-say-who\n"]).mask("x line-long-enough-to-say-who y") == f"x {MASK} y"


def test_the_password_line_of_a_user_and_password_secret_is_masked_when_printed_alone():
    """Lines were masked on their own from 16 characters: a 10-character password saved under its
    user's name on the line before was readable wherever the source printed it alone. DataHub's
    masker takes lines from 8."""
    masker = Masker(["svc_ingest\nHunter2024\n"])
    masked = masker.mask("connecting as svc_ingest with password Hunter2024 to db\n")
    assert "Hunter2024" not in masked and "svc_ingest" not in masked
    assert masked == f"connecting as {MASK} with password {MASK} to db\n"
    assert Masker(["ab\n1234567\n"]).mask("x 1234567 y") == "x 1234567 y", "a line under 8 identifies nothing"


def test_overlapping_forms_of_two_secrets_leave_nothing_of_either():
    masked = Masker(["abcdef", "efghij"]).mask("xx abcdefghij yy")
    assert masked == f"xx {MASK} yy"


def test_a_key_cut_at_every_byte_is_masked_as_if_it_came_whole():
    masker = Masker([KEY, PASSWORD, "dhx_ingest-token-0001"])
    data = noisy_output(KEY, PASSWORD).encode()
    whole = masker.mask(data.decode()).encode()
    for cut in range(len(data) + 1):
        stream = masker.stream()
        out = b"".join(stream.feed(data[:cut]) + stream.feed(data[cut:]) + stream.finish())
        differs_at = first_difference(out, whole)
        assert differs_at is None, f"cut at byte {cut} of {len(data)}: masked differently from byte {differs_at} on"


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=6000), max_size=40), seed=st.integers(0, 2**32 - 1))
def test_output_cut_anywhere_and_interleaved_is_masked_as_if_it_came_whole(cuts, seed):
    rng = random.Random(seed)
    key = KEY
    parts = [noisy_output(key, PASSWORD), key, json.dumps(key), PASSWORD, "x" * rng.randint(0, 3000),
             "\n".join(key.splitlines()[rng.randint(1, 20):]), "plain text\n" * rng.randint(0, 5),
             key[: key.index("\n", 900) + 12]]  # a key cut short: whole lines and 11 characters of one
    rng.shuffle(parts)
    data = "".join(parts).encode()
    masker = Masker([key, PASSWORD])
    stream = masker.stream()
    out, at = [], 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += stream.feed(data[at:cut])
        at = cut
    out += stream.feed(data[at:]) + stream.finish()
    masked = b"".join(out)
    leaked = leaks(key, masked.decode())
    assert not leaked, f"readable: {leaked}"
    differs_at = first_difference(masked, masker.mask(data.decode()).encode())
    assert differs_at is None, f"the stream masks differently from byte {differs_at} on"


def test_what_the_stream_holds_back_is_bounded_by_the_longest_form():
    masker = Masker([KEY, PASSWORD])
    longest = max(len(form) for family in families(KEY) for form in family)  # its base64, here
    stream = masker.stream()
    emitted = 0
    for _ in range(2000):  # 128 MiB without a newline, and the key's first line at every end
        emitted += sum(map(len, stream.feed(b"y" * 65531 + b"-----")))
        assert stream.held < longest
    assert emitted > 2000 * 65536 - longest
    prefix = KEY[:900].encode()
    held_before = stream.held
    assert b"".join(stream.feed(b"\n" + prefix)) == (b"y" * 65531 + b"-----")[-held_before:] + b"\n", \
        "a key's beginning waits for the rest"
    assert b"".join(stream.feed(KEY[900:].encode() + b"after\n")) == MASK.encode() + b"after\n"


def test_the_structured_report_ships_with_every_secret_form_masked(tmp_path):
    """A source that puts the password into a warning, the key into its config echo and the
    token into a failure key: the report keeps its structure and its figures, not the secrets."""
    token = "dhx_ingest-only-token-for-exe_1"
    report = {
        "cli": {"cli_version": "1.7.0.17", "mem_info": "123 MB"},
        "source": {"type": "snowflake", "report": {
            "events_produced": 12, "warnings": [
                {"title": "login retried", "message": f"password {PASSWORD} rejected once",
                 "context": [f"snowflake://u:p%40ss%22w%2Frd-42%20%26x@acct", json.dumps({"key": KEY})]}],
            "failures": {f"token {token}": ["401"], "token other": ["403"]},
            "config": {"private_key": KEY, "account_id": 4242424242},
        }},
        "sink": {"type": "datahub-rest", "report": {"total_records_written": 12, "ok": True, "gms": None}},
    }
    path = tmp_path / "ingestion_report.json"
    path.write_text(json.dumps(report))
    prepared = PreparedTask(argv=[], env={}, stdin_bytes=b"", workdir=str(tmp_path),
                            masker=Masker([KEY, PASSWORD, token, "4242424242"]), report_path=str(path),
                            memory_limit_bytes=None)
    shipped = prepared.structured_report()
    text = json.dumps(shipped)
    leaked = leaks(KEY, text) + leaks(PASSWORD, text) + leaks(token, text) + leaks("4242424242", text)
    leaked += [name for name, form in (("URL-encoded password", "p%40ss"), ("JSON-escaped key", "\\\\n")) if form in text]
    assert not leaked, f"readable in the shipped report: {leaked}"
    assert json.loads(text) == shipped, "still JSON"

    def shape(value) -> str:
        if isinstance(value, dict):
            return "{" + ",".join(sorted(shape(v) for v in value.values())) + "}"
        if isinstance(value, list):
            return "[" + ",".join(shape(v) for v in value) + "]"
        return "x"
    assert shape(shipped) == shape(report), "the same structure: nothing dropped, nothing merged"
    source = shipped["source"]["report"]
    assert source["events_produced"] == 12 and shipped["sink"]["report"] == report["sink"]["report"]
    assert source["warnings"][0]["message"] == f"password {MASK} rejected once"
    assert source["config"] == {"private_key": MASK, "account_id": MASK}
    assert sorted(source["failures"]) == [f"token {MASK}", "token other"]


def test_a_report_that_cannot_be_read_is_no_report(tmp_path):
    path = tmp_path / "ingestion_report.json"
    prepared = PreparedTask(argv=[], env={}, stdin_bytes=b"", workdir=str(tmp_path), masker=Masker([PASSWORD]),
                            report_path=str(path), memory_limit_bytes=None)
    assert prepared.structured_report() is None
    path.write_text("[" * 100_000)
    assert prepared.structured_report() is None


@settings(max_examples=400, deadline=None)
@given(secrets=st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=3,
                                max_size=150), min_size=1, max_size=6),
       which=st.integers(0, 5), offset=st.integers(0, 300), noise=st.sampled_from(["x", "a b ", "é", "\n", "-"]))
def test_the_quick_filter_never_clears_text_that_holds_a_form(secrets, which, offset, noise):
    """Forms of every length, at every alignment to the filter's 8-byte blocks, among others (a
    key among them, so that the filter looks for long forms by blocks)."""
    secrets = secrets + [KEY]
    masker = Masker(secrets)
    secret = secrets[which % len(secrets)]
    for form in encodings(secret):
        text = noise * offset + form + noise * (offset // 3)
        masked = masker.mask(text)
        # A form MASK itself holds (a secret of '*'s) is found in any masked text: not a leak.
        passed = form in masked and form not in noise * (2 * offset) and form not in MASK
        assert not passed, f"a form of secret #{which % len(secrets)} at byte {offset} was not masked"


def test_a_password_url_quoted_with_pythons_default_safe_slash_is_masked():
    """urllib.parse.quote(password), whose default leaves '/' as it is, is how most code puts a
    password into a URI by hand; only quote(safe="") and quote_plus were masked, so a password
    holding '/' and any other reserved character reached the log in that form."""
    from urllib.parse import quote

    masked = Masker([PASSWORD]).mask(f"uri=mysql://user:{quote(PASSWORD)}@host/db")
    assert masked == f"uri=mysql://user:{MASK}@host/db"


def test_a_secret_json_escaped_with_its_unicode_kept_is_masked():
    """JSON written with ensure_ascii=False (pydantic's model_dump_json, most JSON loggers) escapes
    a quote or a backslash but keeps 'ä' as it is: neither the plain form nor the ASCII-escaped
    one matched a secret holding both."""
    secret = 'pässwört"fake\\42'
    line = json.dumps({"password": secret}, ensure_ascii=False)
    assert Masker([secret]).mask(line) == json.dumps({"password": MASK})


def test_a_value_cut_short_is_masked_as_far_as_it_goes_in_a_stream_cut_at_every_byte():
    """Pydantic quotes a long refused value as its first 24 and last 23 characters; a truncated
    line keeps a head only. Each piece is masked as far as it goes on as the value, and the
    stream, cut anywhere, masks it as the whole text does."""
    token = "tok_" + "0123456789abcdef" * 3 + "fedcba9876543210"
    masker = Masker([token, PASSWORD])
    text = (f"input_value='{token[:24]}...{token[-23:]}', input_type=str]\n"
            f"cut at the line's end: {token[:40]}\nand its tail alone {token[-30:]}; then {token}!\n"
            f"a head that goes astray: {token[:30]}XYZ, and one too short to say whose: {token[:12]}\n")
    whole = masker.mask(text)
    leaked = leaks(token, whole)
    assert not leaked, f"readable in the masked output: {leaked}"
    shaped = whole.count(MASK) == 6 and f"{MASK}XYZ" in whole and token[:12] in whole
    assert shaped, "six pieces masked, what follows a head masked as far as it goes, a shorter head left"
    data = text.encode()
    for cut in range(len(data) + 1):
        stream = masker.stream()
        out = b"".join(stream.feed(data[:cut]) + stream.feed(data[cut:]) + stream.finish())
        assert first_difference(out, whole.encode()) is None, f"cut at byte {cut}: masked differently"


def test_a_password_as_sqlalchemy_puts_it_into_a_url_and_a_value_without_its_newline_are_masked():
    password = "Pa$$" + "w0rd!@2024/eu:x"
    rendered = password.replace(":", "%3A").replace("@", "%40").replace("/", "%2F")
    in_url = Masker([password]).mask(f"postgresql://u:{rendered}@h/db") == f"postgresql://u:{MASK}@h/db"
    assert in_url, "the password as SQLAlchemy 1.x renders it in a URL was not masked"
    stripped = Masker(["wh1te-Rabbit\n"]).mask("password wh1te-Rabbit; retrying") == f"password {MASK}; retrying"
    assert stripped, "the value without the newline it was saved with was not masked"


def test_a_password_in_an_http_basic_credential_is_masked_whatever_the_user_name_before_it():
    """http.client's debug output and most HTTP tracing print `Authorization: Basic ...`, base64
    of "user:password": the password's bytes begin at any offset of base64's 3-byte groups. At
    each offset, and in both alphabets, the groups holding the password's bytes alone are masked,
    in a stream cut at every byte too; at most the two bytes at either edge, written into groups
    shared with the user name or what follows, can be read."""
    masker = Masker([PASSWORD])
    middles = base64_middles(PASSWORD)
    for user in ("", "u", "ab", "etl", "svc_datahub"):
        for encode in (base64.b64encode,):
            header = "Authorization: Basic " + encode(f"{user}:{PASSWORD}".encode()).decode() + "\r\n"
            masked = masker.mask(header)
            assert MASK in masked and not any(m in masked for m in middles), f"user of {len(user)} characters"
            readable = masked.replace("Authorization: Basic ", "").replace("\r\n", "").split(MASK)
            assert all(len(piece) <= 4 + len(encode(f"{user}:".encode())) for piece in readable)
            data = header.encode()
            for cut in range(len(data) + 1):
                stream = masker.stream()
                out = b"".join(stream.feed(data[:cut]) + stream.feed(data[cut:]) + stream.finish())
                assert out == masked.encode(), f"user of {len(user)} characters, cut at byte {cut}"


def test_json_with_escaped_slashes_a_bytes_repr_and_latin_1_output_are_masked():
    """Three ways a task prints a secret that matched no form: JSON with '/' written as '\\/'
    (PHP's json_encode, several Java libraries; an AWS secret key holds '/'), a bytes object's
    repr (non-ASCII as \\x escapes), and a non-ASCII value printed in Latin-1, which the relay
    turns into U+FFFD before masking."""
    secret = "wJalr/XUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
    masker = Masker([secret])
    escaped = json.dumps({"SecretAccessKey": secret}).replace("/", "\\/")
    assert masker.mask(escaped) == json.dumps({"SecretAccessKey": MASK}), "JSON with escaped slashes"
    accented = "pässwört-Geheim-42"
    masker = Masker([accented])
    assert masker.mask(f"body={accented.encode()!r}") == f"body=b'{MASK}'", "a bytes repr"
    stream = masker.stream()
    latin_1 = b"login failed for password " + accented.encode("latin-1") + b" (server charset latin1)\n"
    relayed = latin_1.decode("utf-8", "replace").encode()  # what the relay masks (task_log.py)
    out = b"".join(stream.feed(relayed) + stream.finish())
    assert out == f"login failed for password {MASK} (server charset latin1)\n".encode(), "Latin-1 output"


def test_a_cut_form_that_parts_inside_a_character_leaves_valid_utf_8():
    """A secret's head cut short right where the text goes on with another character of the same
    lead byte (é, è: C3 A9, C3 A8): the span masked half a character, mask() could not decode
    its own output (the whole ingestion report was dropped), and the relay wrote invalid UTF-8."""
    secret = "s3cr3t-value-123-abcdef" + "é" + "x" * 40
    text = "warning: bad password " + secret[:23] + "è..."
    masker = Masker([secret])
    assert masker.mask(text) == "warning: bad password ********è..."
    stream = masker.stream()
    relayed = b"".join(bytes(part) for part in stream.feed((text + "\n").encode()) + stream.finish())
    assert relayed.decode("utf-8") == "warning: bad password ********è...\n"
    # The tail cut short after a character that ends in é's last byte (ɩ, é: C9 A9, C3 A9): the
    # front edge likewise.
    assert masker.mask("[ɩ" + secret[24:] + "]") == "[ɩ********]"


def test_a_secret_escaped_twice_is_masked():
    """A backslash or a quote in a value, through two layers of quoting: repr() of an exception
    whose message holds repr(value), a JSON document in a JSON string, a repr that escapes '.
    Once-escaped forms were masked; twice-escaped ones went out nearly whole."""
    for secret in ("DOMAIN\\s3cr3t-value-123", "it's-s3cr3t-value-123", 'say "s3cr3t-value-123"'):
        masker = Masker([secret])
        error = ValueError(f"login failed for password {secret!r}")
        for line in (f"error: {error!r}", json.dumps({"warnings": [json.dumps({"password": secret})]}),
                     repr(f"{secret!r} and a \" too"), f"error: {error}"):
            assert "s3cr3t-value-123" not in masker.mask(line), (secret, line)
