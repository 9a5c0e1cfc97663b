"""``pipeline bench``: the stage engine against raw aiokafka and plain FastStream."""
