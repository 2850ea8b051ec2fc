"""One status ledger: no module but mpm/messaging/ledger.py changes the status of a stored SMS.
(New rows are inserted with their first status by the senders, and the ledger writes their first event.)"""
import ast
from pathlib import Path

import pytest

MPM = Path(__file__).resolve().parent.parent / "mpm"
LEDGER = MPM / "messaging" / "ledger.py"


def _updates_of_sms_setting_status(tree: ast.AST) -> list[int]:
    """Lines of `update(Sms…)…values(status=…)` chains and of `<sms>.status = …` assignments."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            chain, target = node.func.value, None
            while isinstance(chain, ast.Call) or isinstance(chain, ast.Attribute):
                if isinstance(chain, ast.Call) and isinstance(chain.func, ast.Name) and chain.func.id == "update":
                    target = ast.unparse(chain.args[0]) if chain.args else ""
                    break
                chain = chain.func if isinstance(chain, ast.Call) else chain.value
            if target and "sms" in target.lower() and "rollup" not in target.lower():
                keys = [kw.arg for kw in node.keywords]
                keys += [k.value for a in node.args if isinstance(a, ast.Dict) for k in a.keys
                         if isinstance(k, ast.Constant)]
                if "status" in keys:
                    found.append(node.lineno)
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and t.attr == "status" and "sms" in ast.unparse(t.value).lower():
                    found.append(node.lineno)
    return found


@pytest.mark.parametrize("path", sorted(p for p in MPM.rglob("*.py") if p != LEDGER and "migrations" not in p.parts),
                         ids=lambda p: str(p.relative_to(MPM)))
def test_only_the_ledger_writes_an_sms_status(path):
    assert _updates_of_sms_setting_status(ast.parse(path.read_text())) == [], f"{path} changes Sms.status"


def test_the_check_finds_a_status_write():
    bad = ast.parse("db.session.execute(update(Sms).where(Sms.id == 1).values(status='sent'))\nsms.status = 'failed'\n")
    assert sorted(_updates_of_sms_setting_status(bad)) == [1, 2]
