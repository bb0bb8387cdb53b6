"""A capture's P_Key tables checked against opensm's ``partitions.conf`` (``madpipe check``): the
file's reading (``partitions_conf``), the check of the fabric snoop's tables (``tables``), its output.
May import: madpipe.codecs, pipeline.fabric.snoop, pipeline.fabric.model, pipeline.fabric.diff (its GUIDs
and port order) and pipeline.decode.output (JSON Lines).
"""
