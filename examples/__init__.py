"""Examples written against the ledger's public APIs, as a user of the library would."""
