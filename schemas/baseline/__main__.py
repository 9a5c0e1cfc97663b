"""``python -m schemas.baseline``: freeze the current schemas as this version's baseline."""

from schemas.baseline import freeze

for written in freeze():
    print(f"wrote {written}")
