"""Generate the shipped finance instruction data set (data/finance/*.jsonl).

Short financial calculations and extractions with exact answers, so a run can be scored
by exact match and not only by loss. Seven tasks, each with several phrasings so a model
has to read the question rather than memorise one template:

* extract_amount / extract_date: copy a field out of an invoice line (easy: a 135M model
  learns these within minutes);
* currency_conversion, discount_price, simple_interest: one multiplication;
* percent_change, compound_interest: several operations (hard for a small model).

Every answer is computed with ``decimal`` and ROUND_HALF_UP. The script is deterministic:
running it again rewrites the three files byte for byte (a test checks this).

    python data/make_finance_data.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import random
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

SEED = 20261124
SIZES = {"train": 3000, "validation": 300, "test": 300}
CENT = Decimal("0.01")
MAX_PROMPT, MAX_RESPONSE = 200, 20  # characters; about 105 tokens at most with the chat template
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
COMPANIES = ["Acme Corp", "Northwind Ltd", "Globex GmbH", "Initech", "Umbrella SA", "Stark Supplies",
             "Wayne Logistics", "Blue Harbor Co", "Tyrell Parts", "Vandelay Imports", "Oceanic Foods", "Hooli Cloud"]
ITEMS = ["Office chairs", "Printer toner", "Laptops", "Consulting hours", "Cloud hosting", "Desk lamps",
         "Shipping", "Software licence", "Coffee beans", "Cleaning service", "Monitors", "Paper reams"]
CURRENCIES = [("USD", "$"), ("EUR", "€"), ("GBP", "£")]
# Each pair's rate is near its real 2025-26 mid-market level (units of the second currency
# per one of the first); an example moves it by -5% .. +6% so the model cannot memorize it.
RATES = {("USD", "EUR"): Decimal("0.86"), ("EUR", "USD"): Decimal("1.16"), ("GBP", "USD"): Decimal("1.33"),
         ("USD", "JPY"): Decimal("150"), ("EUR", "GBP"): Decimal("0.87"), ("CHF", "EUR"): Decimal("1.07"),
         ("USD", "CAD"): Decimal("1.39"), ("AUD", "USD"): Decimal("0.65")}
PAIRS = list(RATES)


def money(x: Decimal) -> str:
    """Two decimals, rounded half up: the one money format every answer uses."""
    return str(x.quantize(CENT, rounding=ROUND_HALF_UP))


def amount(rng: random.Random, low: int, high: int, nice: bool) -> Decimal:
    """A whole amount when ``nice`` (easy items), otherwise one with cents."""
    whole = rng.randint(low, high)
    if nice:
        return Decimal(whole)
    return Decimal(whole) + Decimal(rng.randint(0, 99)) / 100


def grouped(x: Decimal) -> str:
    """With thousands separators ("1,284.50"), as invoices often print amounts."""
    return f"{x:,.2f}"


def percent_change(rng: random.Random) -> tuple[str, str]:
    old = amount(rng, 20, 500, nice=True)
    pct = Decimal(rng.choice([-50, -40, -25, -20, -15, -12, -10, -8, -5, 5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 100]))
    if rng.random() < 0.3:
        pct = Decimal(rng.randint(-60, 120) or 7)
    new = (old * (1 + pct / 100)).quantize(CENT, rounding=ROUND_HALF_UP)
    answer = ((new - old) / old * 100).quantize(CENT, rounding=ROUND_HALF_UP)
    thing = rng.choice(["A stock", "A share price", "Monthly revenue", "A product's price", "The fund"])
    prompt = rng.choice([
        f"{thing} went from {money(old)} to {money(new)}. What is the percentage change?",
        f"Percentage change from {money(old)} to {money(new)}?",
        f"{thing} moved from {money(old)} to {money(new)}. Give the change in percent.",
    ])
    return prompt, f"{answer}%"


def simple_interest(rng: random.Random) -> tuple[str, str]:
    principal = Decimal(rng.choice([500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 8000, 10000, 12000, 20000]))
    if rng.random() < 0.3:
        principal = Decimal(rng.randint(5, 250) * 100)
    rate = Decimal(rng.choice(["1", "1.5", "2", "2.5", "3", "3.5", "4", "4.5", "5", "6", "7", "8"]))
    years = rng.randint(1, 10)
    interest = principal * rate / 100 * years
    prompt = rng.choice([
        f"Simple interest on {money(principal)} at {rate}% per year for {years} years?",
        f"How much simple interest does {money(principal)} earn at {rate}% a year over {years} years?",
        f"A loan of {money(principal)} charges {rate}% simple interest per year. Interest after {years} years?",
    ])
    return prompt, money(interest)


def compound_interest(rng: random.Random) -> tuple[str, str]:
    principal = Decimal(rng.choice([1000, 2000, 2500, 5000, 10000, 15000, 20000]))
    rate = Decimal(rng.choice(["2", "3", "4", "5", "6", "8", "10"]))
    years = rng.randint(1, 5)
    final = principal * (1 + rate / 100) ** years
    prompt = rng.choice([
        f"{money(principal)} is invested at {rate}% compounded annually. What is it worth after {years} years?",
        f"Final amount: principal {money(principal)}, {rate}% per year compounded yearly, {years} years?",
        f"You deposit {money(principal)} at {rate}% annual compound interest. Balance after {years} years?",
    ])
    return prompt, money(final)


def currency_conversion(rng: random.Random) -> tuple[str, str]:
    src, dst = rng.choice(PAIRS)
    move = Decimal(rng.choice(range(-5, 7))) / 100
    base = RATES[src, dst]
    rate = (base * (1 + move)).quantize(Decimal("0.1") if base >= 10 else CENT, rounding=ROUND_HALF_UP)
    value = amount(rng, 10, 2000, nice=rng.random() < 0.5)
    prompt = rng.choice([
        f"Convert {money(value)} {src} to {dst} at 1 {src} = {rate} {dst}.",
        f"At a rate of 1 {src} = {rate} {dst}, how much is {money(value)} {src} in {dst}?",
        f"Exchange {money(value)} {src} into {dst}; the rate is {rate} {dst} per {src}.",
    ])
    return prompt, f"{money(value * rate)} {dst}"


def discount_price(rng: random.Random) -> tuple[str, str]:
    price = amount(rng, 5, 900, nice=rng.random() < 0.5)
    pct = Decimal(rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 75]))
    prompt = rng.choice([
        f"An item costs {money(price)}. What is the price after a {pct}% discount?",
        f"Price {money(price)}, discount {pct}%. Final price?",
        f"A {pct}% off sale applies to a {money(price)} item. How much do you pay?",
    ])
    return prompt, money(price * (1 - pct / 100))


def _invoice(rng: random.Random) -> tuple[str, Decimal, tuple[int, int, int]]:
    year, month, day = rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28)
    total = amount(rng, 10, 25000, nice=rng.random() < 0.3)
    code, symbol = rng.choice(CURRENCIES)
    number = f"INV-{rng.randint(10000, 99999)}"
    company, item, qty = rng.choice(COMPANIES), rng.choice(ITEMS), rng.randint(1, 40)
    date = rng.choice([f"{year}-{month:02d}-{day:02d}", f"{day} {MONTHS[month - 1][:3]} {year}",
                       f"{month:02d}/{day:02d}/{year}", f"{MONTHS[month - 1]} {day}, {year}"])
    shown = rng.choice([f"{symbol}{grouped(total)}", f"{grouped(total)} {code}", f"{code} {money(total)}"])
    line = rng.choice([
        f"{number} | {date} | {company} | {item} x{qty} | Total: {shown}",
        f"{company}; {item} ({qty} units); dated {date}; amount due {shown}; ref {number}",
        f"Invoice {number} from {company}, {date}: {qty} x {item}, total {shown}",
    ])
    return line, total, (year, month, day)


def extract_amount(rng: random.Random) -> tuple[str, str]:
    line, total, _ = _invoice(rng)
    ask = rng.choice(["What is the total amount?", "Extract the amount due.", "How much is the invoice for?"])
    return f"{line}\n{ask}", money(total)


def extract_date(rng: random.Random) -> tuple[str, str]:
    line, _, (y, m, d) = _invoice(rng)
    ask = rng.choice(["What is the invoice date (YYYY-MM-DD)?", "Extract the date as YYYY-MM-DD.",
                      "Give the invoice date in ISO format."])
    return f"{line}\n{ask}", f"{y}-{m:02d}-{d:02d}"


TASKS = {"percent_change": percent_change, "simple_interest": simple_interest,
         "compound_interest": compound_interest, "currency_conversion": currency_conversion,
         "discount_price": discount_price, "extract_amount": extract_amount, "extract_date": extract_date}


def generate() -> dict[str, list[dict[str, str]]]:
    """All three splits; tasks interleaved round-robin, every prompt unique across splits."""
    rng = random.Random(SEED)
    seen: set[str] = set()
    names = list(TASKS)
    splits: dict[str, list[dict[str, str]]] = {}
    for split, size in SIZES.items():
        rows = []
        while len(rows) < size:
            task = names[len(rows) % len(names)]
            prompt, response = TASKS[task](rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            rows.append({"id": f"fin-{split}-{len(rows) + 1:05d}", "task": task, "prompt": prompt, "response": response})
        splits[split] = rows
    return splits


def check(splits: dict[str, list[dict[str, str]]]) -> None:
    """Refuse to write a data set that breaks its own promises.

    A prompt shared by two splits would let a model score on the test set by having
    memorised a training example, so that is checked here and not only trusted to
    ``generate``; the length limits keep every example within a 128-token chat sequence.
    """
    owner: dict[str, str] = {}
    for split, rows in splits.items():
        if len(rows) != SIZES[split]:
            raise ValueError(f"{split}: {len(rows)} examples, expected {SIZES[split]}")
        counts = {task: 0 for task in TASKS}
        for row in rows:
            counts[row["task"]] += 1
            if len(row["prompt"]) > MAX_PROMPT or len(row["response"]) > MAX_RESPONSE:
                raise ValueError(f"{row['id']}: prompt or response too long ({len(row['prompt'])}, {len(row['response'])})")
            if row["prompt"] in owner:
                raise ValueError(f"{row['id']}: prompt also appears in {owner[row['prompt']]}: {row['prompt']!r}")
            owner[row["prompt"]] = split
        if max(counts.values()) - min(counts.values()) > 1:
            raise ValueError(f"{split}: tasks are not balanced: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "finance")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    splits = generate()
    check(splits)
    for split, rows in splits.items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (args.out / f"{split}.jsonl").write_text(text, encoding="utf-8")
        print(f"{split}: {len(rows)} examples -> {args.out / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
