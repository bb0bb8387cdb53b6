"""madpipe.codecs: construct schemas, CRCs and capture formats for InfiniBand management traffic."""
