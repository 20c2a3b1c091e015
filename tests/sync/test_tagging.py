"""Attribution tagging: GA4 default channel group and HubSpot source rules, URL parsing."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from rich.console import Console

from leadrelay.model import Channel, Lead, Touch
from leadrelay.sync.tagging import (
    CLICK_ID_PARAMS,
    HUBSPOT_SOURCE_BY_CHANNEL,
    TRACKING_PARAMS,
    UTM_PARAMS,
    Attribution,
    apply_touch,
    channel_to_hubspot_source,
    classify_channel,
    hubspot_source_to_channel,
    is_tracking_param,
    render_attribution,
    source_category,
    tag_url,
)

LP = "https://www.acme.io/demo"

# (pytest id naming the published rule, landing URL, referrer, expected channel)
CHANNEL_CASES: list[tuple[str, str, str | None, Channel]] = [
    # GA4 Direct
    (
        "ga4-direct-source-direct-medium-none",
        f"{LP}?utm_source=(direct)&utm_medium=(none)",
        None,
        Channel.DIRECT,
    ),
    ("ga4-direct-source-direct-no-medium", f"{LP}?utm_source=direct", None, Channel.DIRECT),
    (
        "ga4-direct-medium-not-set",
        f"{LP}?utm_source=direct&utm_medium=(not%20set)",
        None,
        Channel.DIRECT,
    ),
    # GA4 Cross-network
    (
        "ga4-cross-network-campaign",
        f"{LP}?utm_source=google&utm_medium=cpc&utm_campaign=pmax-cross-network",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-cross-network-beats-email-medium",
        f"{LP}?utm_source=news&utm_medium=email&utm_campaign=Cross-Network_Q3",
        None,
        Channel.PAID_SEARCH,
    ),
    # GA4 Paid Shopping
    (
        "ga4-paid-shopping-shop-site",
        f"{LP}?utm_source=amazon&utm_medium=cpc",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-paid-shopping-shop-campaign",
        f"{LP}?utm_source=newsletterx&utm_medium=ppc&utm_campaign=summer_shop",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-paid-shopping-shopping-campaign-over-social",
        f"{LP}?utm_source=facebook&utm_medium=paid&utm_campaign=shopping-feed",
        None,
        Channel.PAID_SEARCH,
    ),
    # GA4 Paid Search
    (
        "ga4-paid-search-google-cpc",
        f"{LP}?utm_source=google&utm_medium=cpc",
        None,
        Channel.PAID_SEARCH,
    ),
    ("ga4-paid-search-bing-ppc", f"{LP}?utm_source=bing&utm_medium=ppc", None, Channel.PAID_SEARCH),
    (
        "ga4-paid-search-retargeting",
        f"{LP}?utm_source=yahoo&utm_medium=retargeting",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-paid-search-paid-prefix",
        f"{LP}?utm_source=duckduckgo&utm_medium=paid_search",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-paid-search-host-source",
        f"{LP}?utm_source=www.google.co.uk&utm_medium=cpc",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-paid-search-case-insensitive",
        f"{LP}?utm_source=Google&utm_medium=CPC",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-order-cpm-on-search-is-paid-search",
        f"{LP}?utm_source=google&utm_medium=cpm",
        None,
        Channel.PAID_SEARCH,
    ),
    # GA4 Paid Social
    (
        "ga4-paid-social-facebook-cpc",
        f"{LP}?utm_source=facebook&utm_medium=cpc",
        None,
        Channel.PAID_SOCIAL,
    ),
    (
        "ga4-paid-social-linkedin-paid",
        f"{LP}?utm_source=linkedin&utm_medium=paid",
        None,
        Channel.PAID_SOCIAL,
    ),
    (
        "ga4-paid-social-ig-paidsocial",
        f"{LP}?utm_source=ig&utm_medium=paidsocial",
        None,
        Channel.PAID_SOCIAL,
    ),
    (
        "ga4-paid-social-tiktok-cpc",
        f"{LP}?utm_source=tiktok&utm_medium=cpc",
        None,
        Channel.PAID_SOCIAL,
    ),
    (
        "ga4-paid-social-host-lnkd",
        f"{LP}?utm_source=lnkd.in&utm_medium=cpc",
        None,
        Channel.PAID_SOCIAL,
    ),
    (
        "hubspot-paidsocial-medium-any-source",
        f"{LP}?utm_source=partnerx&utm_medium=paidsocial",
        None,
        Channel.PAID_SOCIAL,
    ),
    # GA4 Paid Video
    (
        "ga4-paid-video-youtube-cpc",
        f"{LP}?utm_source=youtube&utm_medium=cpc",
        None,
        Channel.DISPLAY,
    ),
    ("ga4-paid-video-vimeo-paid", f"{LP}?utm_source=vimeo&utm_medium=paid", None, Channel.DISPLAY),
    # GA4 Display
    (
        "ga4-display-medium-display",
        f"{LP}?utm_source=gdn&utm_medium=display",
        None,
        Channel.DISPLAY,
    ),
    (
        "ga4-display-medium-banner",
        f"{LP}?utm_source=adroll&utm_medium=banner",
        None,
        Channel.DISPLAY,
    ),
    (
        "ga4-display-medium-interstitial",
        f"{LP}?utm_source=x1&utm_medium=interstitial",
        None,
        Channel.DISPLAY,
    ),
    (
        "ga4-display-medium-cpm-unknown-source",
        f"{LP}?utm_source=dsp&utm_medium=cpm",
        None,
        Channel.DISPLAY,
    ),
    (
        "ga4-display-beats-social-site",
        f"{LP}?utm_source=facebook&utm_medium=banner",
        None,
        Channel.DISPLAY,
    ),
    # GA4 Paid Other
    (
        "ga4-paid-other-unknown-source",
        f"{LP}?utm_source=capterra&utm_medium=cpc",
        None,
        Channel.OTHER,
    ),
    ("ga4-paid-other-cpa", f"{LP}?utm_source=partner&utm_medium=cpa", None, Channel.OTHER),
    # GA4 Organic Shopping
    (
        "ga4-organic-shopping-shop-site",
        f"{LP}?utm_source=ebay&utm_medium=listing",
        None,
        Channel.REFERRAL,
    ),
    (
        "ga4-organic-shopping-campaign-beats-email",
        f"{LP}?utm_source=newsletter&utm_medium=email&utm_campaign=e-shop-launch",
        None,
        Channel.REFERRAL,
    ),
    (
        "ga4-organic-shopping-regex-skips-workshop",
        f"{LP}?utm_source=newsletter&utm_medium=email&utm_campaign=workshop",
        None,
        Channel.EMAIL,
    ),
    # GA4 Organic Social
    (
        "ga4-organic-social-source-list",
        f"{LP}?utm_source=facebook&utm_medium=post",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    (
        "ga4-organic-social-medium-social",
        f"{LP}?utm_source=myforum&utm_medium=social",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    (
        "ga4-organic-social-medium-sm",
        f"{LP}?utm_source=abc&utm_medium=sm",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    (
        "ga4-organic-social-medium-social-media-plus",
        f"{LP}?utm_source=abc&utm_medium=social+media",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    ("ga4-organic-social-source-only", f"{LP}?utm_source=reddit", None, Channel.ORGANIC_SOCIAL),
    (
        "hubspot-social-medium-on-known-network",
        f"{LP}?utm_source=linkedin&utm_medium=social",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    # GA4 Organic Video
    (
        "ga4-organic-video-source",
        f"{LP}?utm_source=youtube&utm_medium=description",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    (
        "ga4-organic-video-medium-regex",
        f"{LP}?utm_source=conf&utm_medium=webinar-video",
        None,
        Channel.ORGANIC_SOCIAL,
    ),
    # GA4 Organic Search
    (
        "ga4-organic-search-medium-organic",
        f"{LP}?utm_source=somewhere&utm_medium=organic",
        None,
        Channel.ORGANIC_SEARCH,
    ),
    ("ga4-organic-search-source-list", f"{LP}?utm_source=ecosia", None, Channel.ORGANIC_SEARCH),
    (
        "ga4-organic-search-google-organic",
        f"{LP}?utm_source=google&utm_medium=organic",
        None,
        Channel.ORGANIC_SEARCH,
    ),
    # GA4 Referral
    (
        "ga4-referral-medium-referral",
        f"{LP}?utm_source=partner.com&utm_medium=referral",
        None,
        Channel.REFERRAL,
    ),
    ("ga4-referral-medium-app", f"{LP}?utm_source=partner&utm_medium=app", None, Channel.REFERRAL),
    (
        "ga4-referral-medium-link",
        f"{LP}?utm_source=partner&utm_medium=link",
        None,
        Channel.REFERRAL,
    ),
    # GA4 Email
    ("ga4-email-medium", f"{LP}?utm_source=newsletter&utm_medium=email", None, Channel.EMAIL),
    ("ga4-email-medium-e-mail", f"{LP}?utm_source=nl&utm_medium=e-mail", None, Channel.EMAIL),
    (
        "ga4-email-medium-e-space-mail",
        f"{LP}?utm_source=nl&utm_medium=e%20mail",
        None,
        Channel.EMAIL,
    ),
    ("ga4-email-source", f"{LP}?utm_source=e_mail&utm_medium=blast", None, Channel.EMAIL),
    # GA4 Affiliates
    (
        "ga4-affiliates-medium",
        f"{LP}?utm_source=awin&utm_medium=affiliate",
        None,
        Channel.AFFILIATE,
    ),
    # GA4 Audio / SMS / Mobile Push
    ("ga4-audio-medium", f"{LP}?utm_source=spotify&utm_medium=audio", None, Channel.OTHER),
    ("ga4-sms-medium", f"{LP}?utm_source=twilio&utm_medium=sms", None, Channel.OTHER),
    ("ga4-sms-source", f"{LP}?utm_source=sms&utm_medium=text", None, Channel.OTHER),
    (
        "ga4-mobile-push-medium-ends-push",
        f"{LP}?utm_source=app&utm_medium=web-push",
        None,
        Channel.OTHER,
    ),
    (
        "ga4-mobile-push-medium-notification",
        f"{LP}?utm_source=app&utm_medium=notification",
        None,
        Channel.OTHER,
    ),
    # GA4 Unassigned
    ("ga4-unassigned-unknown-source", f"{LP}?utm_source=newsletter", None, Channel.OTHER),
    ("ga4-unassigned-campaign-only", f"{LP}?utm_campaign=spring", None, Channel.OTHER),
    (
        "ga4-unassigned-utms-ignore-referrer",
        f"{LP}?utm_source=foo&utm_medium=bar",
        "https://www.google.com/",
        Channel.OTHER,
    ),
    # Auto-tagging click ids
    ("ga4-autotag-gclid", f"{LP}?gclid=Cj0KCQ", None, Channel.PAID_SEARCH),
    ("ga4-autotag-gbraid", f"{LP}?gbraid=0AAAA", None, Channel.PAID_SEARCH),
    ("ga4-autotag-wbraid", f"{LP}?wbraid=CkAB", None, Channel.PAID_SEARCH),
    (
        "ga4-autotag-gclid-beats-manual-email",
        f"{LP}?gclid=x&utm_source=nl&utm_medium=email",
        None,
        Channel.PAID_SEARCH,
    ),
    (
        "ga4-autotag-gclid-with-manual-display",
        f"{LP}?gclid=x&utm_source=gdn&utm_medium=display",
        None,
        Channel.DISPLAY,
    ),
    (
        "hubspot-gclid-over-referrer",
        f"{LP}?gclid=x",
        "https://www.google.com/",
        Channel.PAID_SEARCH,
    ),
    ("dv360-dclid-display", f"{LP}?dclid=abc", None, Channel.DISPLAY),
    ("microsoft-ads-msclkid", f"{LP}?msclkid=abc", "https://www.bing.com/", Channel.PAID_SEARCH),
    ("tiktok-ads-ttclid", f"{LP}?ttclid=abc", None, Channel.PAID_SOCIAL),
    ("meta-fbclid-alone-not-paid", f"{LP}?fbclid=IwAR", None, Channel.ORGANIC_SOCIAL),
    (
        "meta-fbclid-with-paid-utms",
        f"{LP}?fbclid=IwAR&utm_source=fb&utm_medium=paid",
        None,
        Channel.PAID_SOCIAL,
    ),
    ("linkedin-li-fat-id-alone-not-paid", f"{LP}?li_fat_id=abc", None, Channel.ORGANIC_SOCIAL),
    (
        "meta-fbclid-with-email-utms",
        f"{LP}?fbclid=x&utm_source=nl&utm_medium=email",
        None,
        Channel.EMAIL,
    ),
    # Referrer only
    ("referrer-search-google-de", LP, "https://www.google.de/", Channel.ORGANIC_SEARCH),
    ("referrer-search-bing", LP, "https://www.bing.com/search?q=acme", Channel.ORGANIC_SEARCH),
    ("referrer-search-duckduckgo", LP, "https://duckduckgo.com/", Channel.ORGANIC_SEARCH),
    ("referrer-search-yahoo-co-jp", LP, "https://search.yahoo.co.jp/", Channel.ORGANIC_SEARCH),
    ("referrer-search-no-scheme", LP, "www.google.com", Channel.ORGANIC_SEARCH),
    ("referrer-gmail-is-not-search", LP, "https://mail.google.com/", Channel.REFERRAL),
    ("referrer-social-l-facebook", LP, "https://l.facebook.com/l.php", Channel.ORGANIC_SOCIAL),
    ("referrer-social-lm-facebook", LP, "https://lm.facebook.com/", Channel.ORGANIC_SOCIAL),
    ("referrer-social-m-facebook", LP, "https://m.facebook.com/", Channel.ORGANIC_SOCIAL),
    ("referrer-social-t-co", LP, "https://t.co/abc", Channel.ORGANIC_SOCIAL),
    ("referrer-social-out-reddit", LP, "https://out.reddit.com/t3_x", Channel.ORGANIC_SOCIAL),
    ("referrer-social-linkedin", LP, "https://www.linkedin.com/", Channel.ORGANIC_SOCIAL),
    ("referrer-social-lnkd-in", LP, "https://lnkd.in/abc", Channel.ORGANIC_SOCIAL),
    ("referrer-social-x-com", LP, "https://x.com/acme", Channel.ORGANIC_SOCIAL),
    ("referrer-video-youtube", LP, "https://www.youtube.com/", Channel.ORGANIC_SOCIAL),
    ("referrer-shopping-amazon", LP, "https://www.amazon.de/", Channel.REFERRAL),
    ("referrer-own-site-same-host", LP, "https://www.acme.io/pricing", Channel.DIRECT),
    ("referrer-own-site-subdomain", LP, "https://blog.acme.io/post", Channel.DIRECT),
    ("referrer-none", LP, None, Channel.DIRECT),
    ("referrer-empty", LP, "  ", Channel.DIRECT),
    ("referrer-other-site", LP, "https://news.example.org/article", Channel.REFERRAL),
    ("referrer-garbage-is-none", LP, "not a url", Channel.DIRECT),
]


@pytest.mark.parametrize(
    ("url", "referrer", "expected"),
    [pytest.param(u, r, e, id=i) for i, u, r, e in CHANNEL_CASES],
)
def test_channel_follows_published_rules(url: str, referrer: str | None, expected: Channel) -> None:
    att = tag_url(url, referrer)
    assert att.channel is expected, att.channel_rule


def test_table_has_at_least_sixty_cases() -> None:
    assert len(CHANNEL_CASES) >= 60
    assert len({case[0] for case in CHANNEL_CASES}) == len(CHANNEL_CASES)


def test_own_domains_make_referrer_direct() -> None:
    att = tag_url(LP, "https://app.acme-cdn.net/x", own_domains=["acme-cdn.net"])
    assert att.channel is Channel.DIRECT


def test_referrer_from_other_site_is_referral_without_own_domains() -> None:
    assert tag_url(LP, "https://app.acme-cdn.net/x").channel is Channel.REFERRAL


def test_channel_rule_names_the_rule() -> None:
    att = tag_url(f"{LP}?utm_source=google&utm_medium=cpc")
    assert att.channel_rule.startswith("GA4 Paid Search")
    assert "^(.*cp.*|ppc|retargeting|paid.*)$" in att.channel_rule


def test_classify_channel_accepts_click_id_keys_in_any_case() -> None:
    channel, _ = classify_channel(
        utm_source=None,
        utm_medium=None,
        utm_campaign=None,
        click_ids={"GCLID": "x"},
        referrer=None,
    )
    assert channel is Channel.PAID_SEARCH


@pytest.mark.parametrize(
    ("source", "category"),
    [
        ("google", "search"),
        ("www.google.com.br", "search"),
        ("news.google.com", "search"),
        ("mail.google.com", None),
        ("facebook", "social"),
        ("business.facebook.com", "social"),
        ("youtu.be", "video"),
        ("amazon", "shopping"),
        ("example.com", None),
        ("", None),
    ],
)
def test_source_category(source: str, category: str | None) -> None:
    assert source_category(source) == category


# --- decoding and landing page -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "field", "expected"),
    [
        pytest.param(
            f"{LP}?utm_campaign=Spring%20Sale",
            "utm_campaign",
            "Spring Sale",
            id="percent20-is-space",
        ),
        pytest.param(
            f"{LP}?utm_campaign=Spring+Sale", "utm_campaign", "Spring Sale", id="plus-is-space"
        ),
        pytest.param(f"{LP}?utm_term=%20+b2b+crm+", "utm_term", "b2b crm", id="trimmed"),
        pytest.param(f"{LP}?utm_source=LinkedIn", "utm_source", "LinkedIn", id="case-kept"),
        pytest.param(f"{LP}?UTM_Source=Google", "utm_source", "Google", id="name-case-insensitive"),
        pytest.param(f"{LP}?utm_content=", "utm_content", None, id="empty-is-none"),
        pytest.param(f"{LP}?utm_content=+%20", "utm_content", None, id="blank-is-none"),
        pytest.param(f"{LP}?utm_medium=%zz", "utm_medium", "%zz", id="bad-escape-kept"),
        pytest.param(f"{LP}?utm_medium=a%FFb", "utm_medium", "a%FFb", id="bad-utf8-kept"),
        pytest.param(f"{LP}?utm_term=caf%C3%A9", "utm_term", "café", id="utf8-decoded"),
        pytest.param(f"{LP}?utm_source=a&utm_source=b", "utm_source", "a", id="first-wins"),
        pytest.param("acme.io/x?utm_source=news", "utm_source", "news", id="no-scheme"),
    ],
)
def test_utm_decoding(url: str, field: str, expected: str | None) -> None:
    assert getattr(tag_url(url), field) == expected


def test_all_five_utms_read() -> None:
    att = tag_url(f"{LP}?utm_source=s&utm_medium=m&utm_campaign=c&utm_term=t&utm_content=x")
    assert (att.utm_source, att.utm_medium, att.utm_campaign, att.utm_term, att.utm_content) == (
        "s",
        "m",
        "c",
        "t",
        "x",
    )


def test_click_ids_collected_in_url_order() -> None:
    att = tag_url(f"{LP}?msclkid=M1&GCLID=G1&fbclid=&li_fat_id=L1&gad_source=1")
    assert att.click_ids == {"msclkid": "M1", "gclid": "G1", "li_fat_id": "L1"}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(f"{LP}?utm_source=a&utm_medium=b", LP, id="only-tracking"),
        pytest.param(
            f"{LP}?plan=pro&utm_source=a&ref=x&gclid=1",
            f"{LP}?plan=pro&ref=x",
            id="others-kept-in-order",
        ),
        pytest.param(
            f"{LP}?q=a%20b+c&_ga=1&_gl=2&mc_cid=3&mc_eid=4",
            f"{LP}?q=a%20b+c",
            id="others-kept-as-written",
        ),
        pytest.param(
            f"{LP}?hsa_cam=1&hsa_new_thing=2&_hsenc=x&_hsmi=y&utm_id=9",
            LP,
            id="hubspot-and-utm-family",
        ),
        pytest.param(f"{LP}?a=1#section", f"{LP}?a=1", id="fragment-dropped"),
        pytest.param("acme.io/x?utm_source=a&k=v", "acme.io/x?k=v", id="no-scheme"),
        pytest.param("/pricing?utm_source=a", "/pricing", id="relative-path"),
        pytest.param("?utm_source=a", None, id="query-only"),
        pytest.param("", None, id="empty"),
        pytest.param("http://[::1/x?utm_source=a", None, id="unparseable"),
        pytest.param(f"{LP}?UTM_SOURCE=a&Gclid=b", LP, id="names-case-insensitive"),
        pytest.param(f"{LP}?utm%5Fsource=a", LP, id="encoded-name"),
    ],
)
def test_landing_page_cleaned(url: str, expected: str | None) -> None:
    assert tag_url(url).landing_page == expected


def test_unparseable_url_keeps_referrer_channel() -> None:
    att = tag_url("http://[::1/x", "https://www.bing.com/")
    assert att.landing_page is None
    assert att.channel is Channel.ORGANIC_SEARCH


def test_tracking_params_cover_click_ids_and_utms() -> None:
    assert set(CLICK_ID_PARAMS) <= TRACKING_PARAMS
    assert {"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"} <= (
        TRACKING_PARAMS
    )
    assert is_tracking_param(" UTM_Whatever ")
    assert not is_tracking_param("utmost")


@given(url=st.text(), referrer=st.none() | st.text())
def test_tag_url_never_raises_and_cleans_landing_page(url: str, referrer: str | None) -> None:
    att = tag_url(url, referrer)
    assert isinstance(att.channel, Channel)
    # the Attribution tag_url puts together is the one its constructor builds
    assert att == dataclasses.replace(att)
    assert list(vars(att)) == [f.name for f in dataclasses.fields(Attribution)]
    if att.landing_page is not None:
        query = att.landing_page.partition("?")[2]
        for pair in query.split("&"):
            name = pair.partition("=")[0]
            assert not is_tracking_param(unquote(name.replace("+", " ")))


@given(
    base=st.sampled_from([LP, "acme.io/p", "/p"]),
    pairs=st.lists(
        st.tuples(
            st.sampled_from([*CLICK_ID_PARAMS, "utm_source", "utm_term", "UTM_Medium", "k"]),
            st.text(alphabet="abc%+ =&", max_size=5),
        ),
        max_size=6,
    ),
)
def test_landing_page_never_carries_tracking_params(
    base: str, pairs: list[tuple[str, str]]
) -> None:
    url = base + "?" + "&".join(f"{k}={v}" for k, v in pairs)
    landing = tag_url(url).landing_page
    assert landing is not None
    query = landing.partition("?")[2]
    names = [p.partition("=")[0].strip().lower() for p in query.split("&") if p]
    assert not any(is_tracking_param(n) for n in names)


# --- first touch -------------------------------------------------------------------------------

T1 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
T2 = datetime(2024, 3, 8, 9, 0, tzinfo=UTC)


def test_first_touch_kept_across_two_touches() -> None:
    lead = Lead(email="ana@acme.io")
    apply_touch(lead, tag_url(f"{LP}?utm_source=google&utm_medium=cpc&gclid=G"), at=T1)
    apply_touch(lead, tag_url(LP, "https://l.facebook.com/"), at=T2)
    assert lead.first_touch is not None
    assert lead.first_touch.channel is Channel.PAID_SEARCH
    assert lead.first_touch.click_ids == {"gclid": "G"}
    assert lead.first_touch.at == T1
    assert lead.channel is Channel.ORGANIC_SOCIAL


def test_later_touch_replaces_latest_fields_including_none() -> None:
    lead = Lead(email="ana@acme.io")
    apply_touch(lead, tag_url(f"{LP}?utm_source=google&utm_medium=cpc&gclid=G"), at=T1)
    apply_touch(lead, tag_url(LP, "https://www.bing.com/"), at=T2)
    assert (lead.utm_source, lead.utm_medium, lead.click_ids) == (None, None, {})
    assert lead.referrer == "https://www.bing.com/"
    assert lead.landing_page == LP


def test_first_touch_taken_from_attribution_already_on_lead() -> None:
    lead = Lead(email="ana@acme.io", channel=Channel.EMAIL, utm_source="newsletter")
    apply_touch(lead, tag_url(LP), at=T2)
    assert lead.first_touch is not None
    assert lead.first_touch.channel is Channel.EMAIL
    assert lead.first_touch.at == lead.created_at
    assert lead.channel is Channel.DIRECT


def test_first_touch_stamped_now_without_at() -> None:
    lead = Lead(email="ana@acme.io")
    apply_touch(lead, tag_url(LP))
    assert lead.first_touch is not None
    assert lead.first_touch.at is not None
    assert lead.first_touch.at.tzinfo is not None


@pytest.mark.parametrize(
    "attribution",
    [
        Attribution(Channel.PAID_SEARCH, utm_source=" google ", utm_medium="  ", click_ids={}),
        Attribution(Channel.EMAIL, utm_campaign="nov", landing_page=LP, referrer=""),
        Attribution(Channel.OTHER, utm_term=7, click_ids={"gclid": "G"}),  # type: ignore[arg-type]
    ],
)
def test_a_touch_sets_what_validated_assignments_would(attribution: Attribution) -> None:
    fast = Lead(email="ana@acme.io", first_touch={})
    checked = fast.model_copy(deep=True)
    error = None
    try:
        for name in ("channel", *UTM_PARAMS, "landing_page", "referrer"):
            setattr(checked, name, getattr(attribution, name))
        checked.click_ids = dict(attribution.click_ids)
    except ValidationError as exc:
        error = exc.errors()[0]["loc"]
    if error is not None:
        with pytest.raises(ValidationError) as caught:
            apply_touch(fast, attribution, at=T1)
        assert caught.value.errors()[0]["loc"] == error
        return
    apply_touch(fast, attribution, at=T1)
    assert fast.model_dump() == checked.model_dump()
    assert fast.model_fields_set == checked.model_fields_set


class _Text(str):
    """A str subclass: not a plain str, so a Touch validates it."""


_TOUCH_TEXT = st.none() | st.sampled_from(["", "  ", "google", " cpc ", "nov q3"])
_ATTRIBUTIONS = st.builds(
    Attribution,
    channel=st.sampled_from([*Channel, "email"]),
    utm_source=_TOUCH_TEXT | st.builds(_Text, st.sampled_from(["x", " y "])),
    utm_medium=_TOUCH_TEXT,
    utm_campaign=_TOUCH_TEXT,
    utm_term=_TOUCH_TEXT | st.just(7),
    utm_content=_TOUCH_TEXT,
    click_ids=st.dictionaries(st.sampled_from(["gclid", "fbclid"]), st.sampled_from(["G", "F"]))
    | st.just({"gclid": 5}),
    landing_page=st.none() | st.just(LP),
    referrer=_TOUCH_TEXT,
)
_AT = st.sampled_from([None, T1, datetime(2024, 3, 1, 9, tzinfo=timezone(timedelta(hours=2)))])


def _validated_first_touch(attribution: Attribution, at: datetime | None) -> Touch:
    """The Touch of an attribution, validated by its constructor."""
    return Touch(
        channel=attribution.channel,
        utm_source=attribution.utm_source,
        utm_medium=attribution.utm_medium,
        utm_campaign=attribution.utm_campaign,
        utm_term=attribution.utm_term,
        utm_content=attribution.utm_content,
        click_ids=dict(attribution.click_ids),
        landing_page=attribution.landing_page,
        referrer=attribution.referrer,
        at=at,
    )


@given(attribution=_ATTRIBUTIONS, at=_AT)
def test_to_touch_is_the_validated_touch(attribution: Attribution, at: datetime | None) -> None:
    try:
        expected: Touch | None = _validated_first_touch(attribution, at)
    except ValidationError:
        expected = None
    if expected is None:
        with pytest.raises(ValidationError):
            attribution.to_touch(at)
        return
    touch = attribution.to_touch(at)
    assert touch.model_dump_json() == expected.model_dump_json()
    assert touch.model_fields_set == expected.model_fields_set
    assert touch.click_ids is not attribution.click_ids


def _validated_touch(lead: Lead, attribution: Attribution, at: datetime | None) -> Lead:
    """A copy of ``lead`` after a touch, every value validated (Touch and Lead assignments)."""
    checked = lead.model_copy(deep=True)
    if checked.first_touch is None:
        if any(getattr(lead, name) for name in ("channel", *UTM_PARAMS, "click_ids",
                                                  "landing_page", "referrer")):  # fmt: skip
            first = lead.touch()
            first.at = lead.created_at
        else:
            first = _validated_first_touch(attribution, at)
        checked.first_touch = first
    for name in ("channel", *UTM_PARAMS, "landing_page", "referrer"):
        setattr(checked, name, getattr(attribution, name))
    checked.click_ids = dict(attribution.click_ids)
    return checked


@given(
    attribution=_ATTRIBUTIONS,
    at=_AT,
    earlier=st.sampled_from([{}, {"utm_source": "news", "channel": Channel.EMAIL},
                             {"click_ids": {"gclid": "G0"}}, {"first_touch": {}}]),
)  # fmt: skip
def test_a_touch_is_what_validating_every_value_gives(
    attribution: Attribution, at: datetime | None, earlier: dict[str, Any]
) -> None:
    lead = Lead(email="ana@acme.io", **earlier)
    try:
        checked: Lead | None = _validated_touch(lead, attribution, at or T2)
    except ValidationError:
        checked = None
    if checked is None:
        with pytest.raises(ValidationError):
            apply_touch(lead, attribution, at=at or T2)
        return
    apply_touch(lead, attribution, at=at or T2)
    assert lead.model_dump() == checked.model_dump()
    assert lead.model_dump_json() == checked.model_dump_json()  # the fields' order too
    assert lead.model_fields_set == checked.model_fields_set
    assert isinstance(lead.first_touch, Touch) and isinstance(checked.first_touch, Touch)
    assert lead.first_touch.model_fields_set == checked.first_touch.model_fields_set
    assert type(lead.first_touch.channel) is type(checked.first_touch.channel)
    assert lead.first_touch.click_ids is not lead.click_ids


# --- HubSpot hs_analytics_source ------------------------------------------------------------------

_HUBSPOT_UNIQUE = [
    c
    for c in Channel
    if list(HUBSPOT_SOURCE_BY_CHANNEL.values()).count(HUBSPOT_SOURCE_BY_CHANNEL[c]) == 1
]


@pytest.mark.parametrize(
    "channel", [*_HUBSPOT_UNIQUE, Channel.OTHER], ids=lambda c: f"hubspot-roundtrip-{c.value}"
)
def test_hubspot_round_trip(channel: Channel) -> None:
    assert hubspot_source_to_channel(channel_to_hubspot_source(channel)) is channel


@pytest.mark.parametrize(
    ("channel", "value"),
    [
        (Channel.ORGANIC_SEARCH, "ORGANIC_SEARCH"),
        (Channel.PAID_SEARCH, "PAID_SEARCH"),
        (Channel.EMAIL, "EMAIL_MARKETING"),
        (Channel.ORGANIC_SOCIAL, "SOCIAL_MEDIA"),
        (Channel.REFERRAL, "REFERRALS"),
        (Channel.OTHER, "OTHER_CAMPAIGNS"),
        (Channel.DISPLAY, "OTHER_CAMPAIGNS"),
        (Channel.AFFILIATE, "OTHER_CAMPAIGNS"),
        (Channel.DIRECT, "DIRECT_TRAFFIC"),
        (Channel.OFFLINE, "OFFLINE"),
        (Channel.PAID_SOCIAL, "PAID_SOCIAL"),
    ],
    ids=lambda v: str(v),
)
def test_channel_to_hubspot_source(channel: Channel, value: str) -> None:
    assert channel_to_hubspot_source(channel) == value


def test_every_channel_has_a_hubspot_source() -> None:
    assert set(HUBSPOT_SOURCE_BY_CHANNEL) == set(Channel)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("social_media", Channel.ORGANIC_SOCIAL),
        (" Paid_Search ", Channel.PAID_SEARCH),
        ("Organic social", Channel.ORGANIC_SOCIAL),
        ("Offline sources", Channel.OFFLINE),
        ("AI_REFERRALS_FROM_THE_FUTURE", Channel.OTHER),
        ("", Channel.OTHER),
    ],
)
def test_hubspot_source_to_channel_lenient(value: str, expected: Channel) -> None:
    assert hubspot_source_to_channel(value) is expected


# --- output ------------------------------------------------------------------------------------


def test_to_dict_is_json_ready() -> None:
    att = tag_url(f"{LP}?utm_source=google&utm_medium=cpc&gclid=G", "https://www.google.com/")
    data = json.loads(json.dumps(att.to_dict()))
    assert data["channel"] == "paid_search"
    assert data["click_ids"] == {"gclid": "G"}
    assert data["landing_page"] == LP
    assert data["channel_rule"] == att.channel_rule


def test_render_attribution_shows_fields_and_reason() -> None:
    att = Attribution(
        channel=Channel.EMAIL,
        utm_source="[bold]nl",
        utm_medium="email",
        click_ids={"gclid": "G"},
        channel_rule="GA4 Email: medium",
    )
    console = Console(width=200, record=True, color_system=None)
    console.print(render_attribution(att))
    out = console.export_text()
    assert "[bold]nl" in out
    assert "gclid=G" in out
    assert "GA4 Email: medium" in out
    assert "email" in out
