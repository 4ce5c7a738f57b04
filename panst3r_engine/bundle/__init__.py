"""The result bundle: the versioned folder a job writes and the Blender add-on imports.

- :mod:`.spec`: the contract (names, dtypes, encodings, stage list; numpy only, vendored into the add-on)
- :mod:`.checks`: validation shared by writer and reader
- :mod:`.write`, :mod:`.read`: the engine's writer and reader
- :mod:`.exports`: per-instance PLY, COCO panoptic, GLB
- :mod:`.layout`: gravity-aligned boxes per instance and ``layout.json`` (numpy only, vendored into the add-on)
- :mod:`.raw`: ``raw.npz`` (raw network outputs) and ``panoptic.npz``
"""

from panst3r_engine.bundle.checks import BundleError
from panst3r_engine.bundle.read import Bundle, read_bundle
from panst3r_engine.bundle.spec import FORMAT_VERSION, decode_panoptic, encode_panoptic
from panst3r_engine.bundle.write import check_output_folder, make_stems, publish_bundle, staging_path, write_bundle

__all__ = [
    "FORMAT_VERSION",
    "Bundle",
    "BundleError",
    "check_output_folder",
    "decode_panoptic",
    "encode_panoptic",
    "make_stems",
    "publish_bundle",
    "read_bundle",
    "staging_path",
    "write_bundle",
]
