"""What a driver measures, as a sweep plans it: ``attention`` (a ``bench run`` point, its record key and memory
bound) and ``step`` (a ``bench model`` training-step point)."""
