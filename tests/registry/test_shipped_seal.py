"""The shipped `sonnets` card is sealed, so a hand edit of its metrics shows as a problem (issue 12, finding 18)."""

import json
import shutil
from pathlib import Path

import quatrain
from quatrain.registry._entries import read_entry

SHIPPED = Path(quatrain.__file__).parent / "zoo_data" / "sonnets"


def test_the_shipped_card_carries_its_seal():
    entry = read_entry(SHIPPED, "shipped")
    assert entry.card.seal == entry.card.seal_of()
    assert entry.problems() == []


def test_a_hand_edit_of_the_shipped_metrics_is_flagged(tmp_path):
    folder = tmp_path / "sonnets"
    shutil.copytree(SHIPPED, folder)
    card = json.loads((folder / "card.json").read_text())
    card["metrics"]["token_cosine"] = 0.9999
    (folder / "card.json").write_text(json.dumps(card))
    assert read_entry(folder, "shipped").problems()
