"""A pool's view model shows its firing alerts (from the alerts extension's events)."""

from __future__ import annotations

from batchnb.extensions.alerts import AlertChanged
from batchnb.ui.model import PoolModel


def test_the_pool_model_lists_firing_alerts_until_they_resolve():
    model = PoolModel("p")
    model.apply([AlertChanged("p", "fails", "firing", 1.0, "3 of 3 attempts failed"),
                 AlertChanged("other", "x", "firing", 1.0)])
    assert [(a["alert"], a["detail"]) for a in model.state()["alerts"]] == [("fails", "3 of 3 attempts failed")]
    model.apply([AlertChanged("p", "fails", "resolved", 2.0)])
    assert model.state()["alerts"] == []


def test_the_pool_view_syncs_the_firing_alerts_to_its_widget():
    from batchnb.engine.events import EventBus
    from batchnb.ui.views import PoolView
    bus = EventBus()
    view = PoolView(model=PoolModel("p"), bus=bus)
    try:
        view._on_events([AlertChanged("p", "fails", "firing", 1.0, "3 of 3 attempts failed")])
        assert [a["alert"] for a in view.alerts] == ["fails"]
        view._on_events([AlertChanged("p", "fails", "resolved", 2.0)])
        assert view.alerts == []
    finally:
        view.close()
