"""The paper venue and the simulated market and strategy phases the demo plays."""
