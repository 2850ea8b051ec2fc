"""The counter under the message box: characters, GSM-7 or UCS-2, segments. The server's rules
(mpm/messaging/encoding.py) and the live counter in the browser (mpm/static/sms-counter.js) must agree."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mpm.messaging.encoding import analyse

COUNTER_JS = Path(__file__).resolve().parent.parent / "mpm" / "static" / "sms-counter.js"

CASES = [
    ("", "GSM-7", 0),
    ("Hello", "GSM-7", 1),
    ("x" * 160, "GSM-7", 1),
    ("x" * 161, "GSM-7", 2),
    ("x" * 306, "GSM-7", 2),
    ("x" * 307, "GSM-7", 3),
    ("€" * 80, "GSM-7", 1),   # extension characters take two septets: 160
    ("€" * 81, "GSM-7", 2),
    ("x" * 158 + "{", "GSM-7", 1),  # 160 septets
    ("x" * 159 + "{", "GSM-7", 2),  # 161 septets
    ("x" * 152 + "{" + "x" * 152, "GSM-7", 3),  # the escape pair is never split across parts
    ("Jambo ñ Ä ß Ω", "GSM-7", 1),
    ("x" * 70 + "é", "GSM-7", 1),   # é is in GSM-7
    ("ç" * 70, "UCS-2", 1),        # ç is not: UCS-2 (GSM-7 has only Ç)
    ("ç" * 71, "UCS-2", 2),
    ("x" * 69 + "😀", "UCS-2", 2),  # one emoji switches the whole message and doubles the cost
    ("x" * 68 + "😀", "UCS-2", 1),  # 70 UTF-16 units
    ("x" * 71 + "ç", "UCS-2", 2),
    ("x" * 133 + "ç", "UCS-2", 2),  # 134 units = 2 × 67
    ("x" * 134 + "ç", "UCS-2", 3),
    ("x" * 66 + "😀" + "x" * 66, "UCS-2", 3),  # a surrogate pair is never split
    ("“quoted”", "UCS-2", 1),
]


@pytest.mark.parametrize("body,encoding,segments", CASES)
def test_server_counter_rules(body, encoding, segments):
    info = analyse(body)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_one_emoji_doubles_the_cost_of_a_full_sms():
    plain = analyse("x" * 100)
    with_emoji = analyse("x" * 100 + "😀")
    assert (plain.encoding, plain.segments) == ("GSM-7", 1)
    assert (with_emoji.encoding, with_emoji.segments) == ("UCS-2", 2)


def run_js(bodies: list[str]) -> list[dict]:
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is needed to check the browser counter against the server's rules"
    script = (f"const c = require({json.dumps(str(COUNTER_JS))});"
              "const bodies = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "process.stdout.write(JSON.stringify(bodies.map(c.analyse)));")
    out = subprocess.run([node, "-e", script], input=json.dumps(bodies), capture_output=True, text=True,
                         check=True, timeout=30)
    return json.loads(out.stdout)


def test_browser_counter_agrees_with_the_server_on_every_case():
    bodies = [body for body, _, _ in CASES]
    for body, js in zip(bodies, run_js(bodies)):
        py = analyse(body)
        assert (js["characters"], js["encoding"], js["segments"], js["units"], js["perSegment"]) == (
            py.characters, py.encoding, py.segments, py.units, py.per_segment), body


def test_browser_counter_knows_exactly_the_gsm7_alphabet():
    # Every character of the Basic Multilingual Plane that either side calls GSM-7, plus a sample of others.
    probe = [chr(c) for c in range(0x20, 0x3000) if not 0xD800 <= c < 0xE000]
    results = run_js(probe)
    mismatches = [(ch, js["encoding"], js["units"]) for ch, js in zip(probe, results)
                  if (js["encoding"], js["units"]) != (analyse(ch).encoding, analyse(ch).units)]
    assert mismatches == []


def test_page_renders_the_server_count_of_a_kept_body(logged_in, company):
    """After a refusal the kept text is counted on the server, so the counter is right before any typing."""
    from conftest import csrf_token, make_person

    person = make_person(company)
    response = logged_in.post(f"/sms/people/{person.id}/send", data={"body": "Habari 😀", "csrf_token": csrf_token(logged_in)},
                              headers={"HX-Request": "true"})
    text = response.get_data(as_text=True)
    counter = re.search(r'<p id="sms-counter".*?</p>', text, re.S).group(0)
    assert '<span data-count="characters">8</span>' in counter
    assert '<span data-count="encoding">UCS-2</span>' in counter
    assert '<span data-count="segments">1</span>' in counter
    assert "makes the whole message UCS-2" in counter
