"""The v3 REST API, as the API function runs it: HTTP conventions and auth, request schemas,
views, and the handlers `app.py` wires to routes. Imports state and core; never scoring, so the
API's zip holds no TensorFlow or NumPy."""
