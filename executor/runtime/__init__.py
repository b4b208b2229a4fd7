"""The task runtime: what turns a claimed task into a confined command (secrets, masking,
limits from the source's variables)."""
