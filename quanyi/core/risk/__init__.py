"""Risk: the rules that hold, challenge or refuse an order before it takes stock, and their decisions."""
