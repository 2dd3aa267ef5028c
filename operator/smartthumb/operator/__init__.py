"""smartthumb's job lifecycle: the pure state machine and the backends that carry it out."""
