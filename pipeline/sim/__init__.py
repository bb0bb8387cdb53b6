"""A fabric without hardware, in a loopback-only network namespace: ibsim's protocol, processes
and relay, captures of opensm on it, replaying MADs into it (or through libibumad).
May import: madpipe.codecs, pipeline.decode.
"""
