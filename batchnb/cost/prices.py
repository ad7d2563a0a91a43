"""Hourly VM prices: the shipped snapshot, user overrides and a refresh from Azure.

Private module; the public names are re-exported by :mod:`batchnb.cost`.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import PriceRefreshError, SpecError
from ..states import NodeGroup
from .value import check_tags

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
GROUPS = tuple(g.value for g in NodeGroup)
# Region key of prices given without a region: they apply in every region.
ANY_REGION = "*"


def _key(vm_size: str) -> str:
    """Lookup key: case-insensitive, ``D4s_v5`` means ``Standard_D4s_v5``."""
    key = vm_size.strip().lower()
    return key if key.startswith(("standard_", "basic_")) else "standard_" + key


def _arm_name(vm_size: str) -> str:
    """Azure's spelling, which the API's filters match case-sensitively."""
    return vm_size if _key(vm_size) == vm_size.strip().lower() else "Standard_" + vm_size.strip()


def _entry(field: str, value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise SpecError(field, value, "expected {'dedicated': $/h, 'spot': $/h}")
    out = {}
    for group, price in value.items():
        if group not in GROUPS:
            raise SpecError(f"{field}[{group!r}]", price, "unknown node group; use 'dedicated' or 'spot'")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise SpecError(f"{field}[{group!r}]", price, "an hourly price must be a finite number >= 0")
        out[group] = float(price)
    return out


def _is_entry(value: Any) -> bool:
    return isinstance(value, Mapping) and any(k in GROUPS for k in value)


def _parse(prices: Any) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, str]]:
    """Accept ``{size: entry}`` (any region) and ``{region: {size: entry}}``, mixed."""
    if not isinstance(prices, Mapping):
        raise SpecError("prices", prices, "expected a mapping vm size -> {'dedicated': $/h, 'spot': $/h}, "
                        "or region -> such a mapping")
    table: dict[str, dict[str, dict[str, float]]] = {}
    names: dict[str, str] = {}
    for key, value in prices.items():
        if _is_entry(value):
            items, region = [(key, value)], ANY_REGION
        elif isinstance(value, Mapping) and value and all(isinstance(v, Mapping) for v in value.values()):
            items, region = list(value.items()), str(key).lower()
        else:
            raise SpecError(f"prices[{key!r}]", value, "expected {'dedicated': $/h, 'spot': $/h} for a vm size, "
                            "or a region's mapping of vm sizes to such dicts")
        for size, entry in items:
            if not isinstance(size, str) or not size.strip():
                raise SpecError("prices", size, "a vm size must be a non-empty string like 'Standard_D4s_v5'")
            table.setdefault(region, {})[_key(size)] = _entry(f"prices[{size!r}]", entry)
            names.setdefault(_key(size), size)
    return table, names


class PriceTable:
    """Hourly prices per VM size, region and node group (``dedicated``/``spot``).

    Parameters
    ----------
    prices
        ``{vm_size: {"dedicated": $/h, "spot": $/h}}`` (valid in any region),
        or ``{region: {vm_size: {...}}}``; both shapes may be mixed. A prices
        entry may lack ``spot`` (sizes Azure sells no spot capacity for).
    currency, date, source
        What the amounts are in, when they were true and where they came from.
    default_region
        The region :meth:`price` uses when called without one.

    Region-specific prices win over region-less ones. VM sizes match without
    regard to case, and ``"D4s_v5"`` means ``"Standard_D4s_v5"``.

    >>> pt = PriceTable({"Standard_D4s_v5": {"dedicated": 0.192, "spot": 0.038}})
    >>> pt.price("Standard_D4s_v5", "spot")
    0.038
    >>> PriceTable.load().price("D4s_v5", "dedicated", region="eastus")
    0.192
    """

    def __init__(self, prices: Mapping[str, Any] | None = None, *, currency: str = "USD",
                 date: str | None = None, source: str = "prices given in Python",
                 default_region: str | None = None):
        self._prices, self._names = _parse(prices or {})
        self.currency = currency
        self.date = date
        self.source = source
        self.default_region = default_region.lower() if default_region else None

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        """Read the shipped snapshot, or a JSON/YAML file of the same shape.

        A file holds either ``{"date", "source", "currency", "default_region",
        "prices": {...}}`` or just the prices mapping.
        """
        if path is None:
            text = resources.files("batchnb").joinpath("data/prices.json").read_text(encoding="utf-8")
            where = "the shipped snapshot batchnb/data/prices.json"
        else:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise SpecError("path", str(path), f"cannot read the price file ({exc.strerror or exc})") from exc
            where = f"file {path}"
        try:
            if str(path).lower().endswith((".yaml", ".yml")):
                import yaml

                doc = yaml.safe_load(text)
            else:
                doc = json.loads(text)
        except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError
            raise SpecError("path", str(path), f"not a valid price file: {exc}") from exc
        if isinstance(doc, Mapping) and "prices" in doc:
            return cls(doc["prices"], currency=doc.get("currency", "USD"), date=_text(doc.get("date")),
                       source=doc.get("source", where), default_region=doc.get("default_region"))
        return cls(doc, source=where)

    @property
    def regions(self) -> list[str]:
        """Regions with prices of their own (region-less prices apply to all)."""
        return sorted(r for r in self._prices if r != ANY_REGION)

    def sizes(self, region: str | None = None) -> list[str]:
        """VM sizes priced in ``region`` (or the default region), region-less ones included."""
        region = (region or self.default_region or ANY_REGION).lower()
        keys = set(self._prices.get(region, {})) | set(self._prices.get(ANY_REGION, {}))
        return sorted(self._names[k] for k in keys)

    def price(self, vm_size: str, group: str, region: str | None = None) -> float:
        """The hourly price of one node of ``vm_size`` in node ``group``.

        Raises :class:`SpecError` for an unknown group, size or region, or a
        size with no price for that group, naming close sizes that do exist.
        """
        if group not in GROUPS:
            raise SpecError("group", group, "use 'dedicated' or 'spot'")
        where = (region or self.default_region or ANY_REGION).lower()
        key = _key(vm_size)
        entries = [e for e in (self._prices.get(r, {}).get(key) for r in (where, ANY_REGION)) if e is not None]
        for entry in entries:
            if group in entry:
                return entry[group]
        if entries:
            raise SpecError("vm_size", vm_size, f"has no {group} price in region {where!r}; give one with "
                            f"PriceTable({{{vm_size!r}: {{{group!r}: <$/h>}}}})")
        if where != ANY_REGION and where not in self._prices and any(key in t for t in self._prices.values()):
            raise SpecError("region", region or where, f"no prices for this region; known regions: "
                            f"{', '.join(self.regions)}")
        close = difflib.get_close_matches(key, list(self._names), n=5, cutoff=0.6)
        hint = f"close names: {', '.join(self._names[k] for k in close)}; " if close else ""
        raise SpecError("vm_size", vm_size, f"no price for this size in region {where!r} ({self.source}); "
                        f"{hint}give a price with PriceTable({{{vm_size!r}: {{'dedicated': <$/h>, 'spot': <$/h>}}}})")

    def refresh(self, region: str | None = None, vm_sizes: Iterable[str] | None = None, *,
                timeout: float = 5.0, max_pages: int = 50, url: str = RETAIL_PRICES_URL) -> PriceTable:
        """Update ``region``'s Linux pay-as-you-go prices from Azure's retail prices API.

        Fetches ``vm_sizes`` (default: the sizes this table knows for the
        region, or every size when it knows none), following ``NextPageLink``
        for at most ``max_pages`` pages. The whole fetch ends within
        ``timeout`` seconds: a machine without internet gets a
        :class:`PriceRefreshError` then, never a hang, and the table stays as
        it was. Returns the table itself.
        """
        region = (region or self.default_region or "").lower()
        if not region:
            raise SpecError("region", None, "name the region to refresh, e.g. refresh('eastus')")
        sizes = list(vm_sizes) if vm_sizes is not None else self.sizes(region)
        clauses = ["serviceName eq 'Virtual Machines'", f"armRegionName eq '{region}'", "priceType eq 'Consumption'"]
        if sizes:
            clauses.append("(" + " or ".join(f"armSkuName eq '{self._names.get(_key(s)) or _arm_name(s)}'" for s in sizes) + ")")
        query = {"$filter": " and ".join(clauses), "currencyCode": f"'{self.currency}'"}
        first = url + "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        items = _fetch(first, timeout, max_pages, since=self.date)
        fetched = _linux_prices(items)
        if not fetched:
            raise PriceRefreshError(f"{url} returned no Linux prices for region {region!r}"
                                    + (f" and sizes {', '.join(sizes)}" if sizes else "")
                                    + "; check the region name (e.g. 'eastus', 'westeurope'). Prices are unchanged.")
        table = {r: dict(sizes_) for r, sizes_ in self._prices.items()}
        for size, entry in fetched.items():
            table.setdefault(region, {})[_key(size)] = entry
            self._names.setdefault(_key(size), size)
        old = self.source
        self._prices = table  # one assignment: readers on other threads see the old or the new table
        self.date = _dt.datetime.now(_dt.timezone.utc).date().isoformat()
        self.source = f"Azure retail prices API ({url}), Linux pay-as-you-go, {region} fetched {self.date}; " \
                      f"other prices: {old}"
        return self

    def __repr__(self) -> str:
        n = len({k for t in self._prices.values() for k in t})
        return f"PriceTable({n} sizes, regions={self.regions or ['any']}, {self.currency}, date={self.date})"


def check_prices(price_table, spec) -> PriceTable | None:
    """The pool's price table from ``Pool(price_table=...)``, checked before any node starts.

    Accepts None (the shipped snapshot when ``vm_size`` is given), a
    :class:`PriceTable`, a dict of prices or a price file path. An unknown
    ``vm_size`` (or one without a spot price for a pool with spot nodes) is
    a :class:`SpecError` here, not at the first node: on a local pool, where
    ``vm_size`` serves only pricing, or when the table was given. A cloud
    pool of a size the shipped snapshot lacks is still made, with a warning,
    and its cost metered at 0 (None is returned).

    >>> from batchnb.spec import PoolSpec
    >>> check_prices({"Standard_X": {"dedicated": 3.6}}, PoolSpec(vm_size="Standard_X")).price("Standard_X", "dedicated")
    3.6
    """
    if price_table is None:
        table = PriceTable.load() if spec.vm_size is not None else None
    elif isinstance(price_table, PriceTable):
        table = price_table
    elif isinstance(price_table, Mapping):
        table = PriceTable(price_table)
    elif isinstance(price_table, (str, Path)):
        table = PriceTable.load(price_table)
    else:
        raise SpecError("price_table", price_table, "expected bnb.PriceTable(...), a dict "
                        "{vm_size: {'dedicated': $/h, 'spot': $/h}} or the path of a price file")
    if table is not None and spec.vm_size is None:
        raise SpecError("vm_size", None, "a price_table was given but no vm_size: name the size the pool's nodes "
                        "are (or would be in the cloud), e.g. vm_size='Standard_D4s_v5'")
    check_tags("tags", spec.tags)
    if spec.vm_size is not None:
        try:
            table.price(spec.vm_size, "dedicated", spec.region)
            if spec.spot:
                table.price(spec.vm_size, "spot", spec.region)
        except SpecError as exc:
            if price_table is not None or spec.backend == "local":
                raise
            import logging
            logging.getLogger("batchnb.cost").warning(
                "batchnb: %s; pool %r is made, and its cost metered at 0", exc, spec.name)
            return None
    return table


def check_job_tags(job_id, options: Mapping) -> None:
    """``pool.job(..., tags=...)``: tag names become columns of cost reports and must not shadow theirs."""
    tags = options.get("tags") if "tags" in options else getattr(job_id, "tags", None)
    check_tags("tags", tags)


def _text(value: Any) -> str | None:
    # YAML reads an unquoted 2024-06-01 as a date.
    return None if value is None else str(value)


def _fetch(url: str, timeout: float, max_pages: int, since: str | None) -> list[dict]:
    """All items of a paginated answer, or PriceRefreshError within ``timeout`` seconds.

    The fetch runs on a daemon thread because a socket timeout does not bound
    name resolution, which is what stalls on an offline machine.
    """
    box: dict[str, Any] = {}
    deadline = time.monotonic() + timeout

    def work() -> None:
        try:
            box["items"] = _pages(url, deadline, max_pages)
        except Exception as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, name="batchnb-price-refresh", daemon=True)
    worker.start()
    worker.join(timeout)
    keep = f"Prices are unchanged (snapshot of {since}); offline, give prices with PriceTable({{...}}) " \
           "or PriceTable.load(path)."
    host = urllib.parse.urlsplit(url).netloc
    if worker.is_alive():
        raise PriceRefreshError(f"no answer from {host} within {timeout} s. {keep}")
    error = box.get("error")
    if isinstance(error, PriceRefreshError):
        raise error
    if error is not None:
        raise PriceRefreshError(f"could not read prices from {host}: {error}. {keep}") from error
    return box["items"]


def _pages(url: str, deadline: float, max_pages: int) -> list[dict]:
    items: list[dict] = []
    for _ in range(max_pages):
        left = deadline - time.monotonic()
        if left <= 0:
            raise PriceRefreshError("the price fetch ran out of time between pages")
        request = urllib.request.Request(url, headers={"User-Agent": "batchnb", "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=left) as answer:
            page = json.load(answer)
        items.extend(page.get("Items", []))
        url = page.get("NextPageLink")
        if not url:
            return items
    raise PriceRefreshError(f"more than {max_pages} pages of prices; name the vm_sizes to refresh or raise max_pages")


def _linux_prices(items: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{armSkuName: {"dedicated": $/h, "spot": $/h}}`` from retail price items.

    Windows meters, low-priority meters (Batch's retired spot), non-hourly
    units and secondary meter regions are skipped.
    """
    out: dict[str, dict[str, float]] = {}
    for item in items:
        sku, product = item.get("armSkuName") or "", item.get("productName") or ""
        name = f"{item.get('skuName', '')} {item.get('meterName', '')}"
        if (not sku or product.endswith("Windows") or "Low Priority" in name
                or item.get("unitOfMeasure") != "1 Hour" or item.get("isPrimaryMeterRegion") is False):
            continue
        group = "spot" if "Spot" in name else "dedicated"
        out.setdefault(sku, {})[group] = float(item["retailPrice"])
    return out
