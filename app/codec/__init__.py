"""The codec: request and response bodies <-> Python values and NumPy arrays.

Pure conversions: no web framework, no torch (tests/codec/test_import_light.py checks it).

    bodies.py        the decode step for a body of either format, and the JSON response writer
    json.py          JSON bodies: orjson and the guards it leaves to us
    json_scanner.py  the one scanner over JSON text (what stands outside strings)
    json_arrays.py   big JSON number arrays straight to NumPy (simdjson)
    msgpack.py       msgpack bodies; tensors as raw bytes, read and written in place (the SDK's too)
    tensors.py       tensor forms (nested lists, base64, bytes, random) <-> NumPy arrays
"""
