"""What every side needs: settings, AWS clients, logging, the API's error types, the clock, the
task and event messages, and the model archive format. Imports nothing else of chalicelib."""
