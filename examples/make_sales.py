"""Write ``sales.csv``: weekly sales of 80 customers, each with their own response to price and promotion.

The README's "Your own data" walk-through starts from it: ``python examples/make_sales.py`` (then
``metaopt init --family tabular path=sales.csv task_column=customer target=units kind=regression``).
Columns: customer, week, price, promo, temperature, units. Each customer's units are a linear function of
price, promo and temperature with that customer's own weights (drawn once), plus noise: a family of
related few-shot regression tasks, one per customer.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def write_sales(path: Path, customers: int = 80, weeks: int = 30, seed: int = 0) -> Path:
    """Write the table to ``path``; returns it."""
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["customer", "week", "price", "promo", "temperature", "units"])
        for c in range(customers):
            base, price_w, promo_w, temp_w = rng.gauss(50, 10), rng.gauss(-3, 1), rng.gauss(8, 3), rng.gauss(0.5, 0.3)
            for week in range(weeks):
                price, promo, temperature = rng.uniform(2, 8), rng.random() < 0.3, rng.gauss(15, 8)
                units = base + price_w * price + promo_w * promo + temp_w * temperature + rng.gauss(0, 2)
                out.writerow([f"c{c:03d}", week, f"{price:.2f}", int(promo), f"{temperature:.1f}", f"{units:.1f}"])
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="sales.csv", help="where to write it (default: sales.csv here)")
    parser.add_argument("--customers", type=int, default=80)
    parser.add_argument("--weeks", type=int, default=30)
    args = parser.parse_args()
    print(f"wrote {write_sales(Path(args.out), args.customers, args.weeks)} ({args.customers} customers x {args.weeks} weeks)")
