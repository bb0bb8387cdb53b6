"""The fabric snoop of a capture as it arrives (``madpipe snoop -r -``, ``--follow``): the snoop's pass
driven batch by batch from a live stream (``snoop``), and the event lines printed on the way (``output``).
May import: .kernels, .model, .routes, .snoop, .snoop_pass, .spool and .text_kernels (the fabric snoop's
parts, beside this folder), pipeline.ingest.live and pipeline.ingest.reader.
"""
