"""The mutator: counter-based randomness, a corpus of seed frames and mailboxes, mutations of fields,
bits, MADs and mailboxes, batches of cases.
May import: madpipe.codecs only.
"""
