"""Frames by hand: SMPs from infiniband-diags-style values, frames from decode's JSON Lines, written
to a capture (scapy/JSON -> frames -> capture, ``madpipe craft``).
May import: madpipe.codecs.
"""
