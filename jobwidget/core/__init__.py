"""Pure parts: the job model, its state rules, log parsing, pricing, errors. No I/O, no engine imports."""
