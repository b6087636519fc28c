"""Asking an OpenAI-compatible server for answers, without Django: which
hosts a base URL may point at (hosts.py), the chat-completions client and
what its errors mean (client.py), and the loop that asks every prompt with
bounded concurrency, retries and back-off (runner.py). The services
(annotate/services/endpoints.py, annotate/services/generation.py) store the
records and the answers; bench/endpoint_throughput.py runs the same loop.

An endpoint's API key is handed to the client and to nothing else here;
every text that leaves the package (an error, a failure) goes through
`redact` first (client.py)."""
