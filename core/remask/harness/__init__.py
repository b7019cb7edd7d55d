"""The shared evaluation and comparison harness (``remask eval``, ``remask compare``)."""
