"""Attribution tagging: UTMs, click ids, landing page and channel of a visit.

``tag_url`` reads a landing-page URL (and the referrer) into an :class:`Attribution`;
``classify_channel`` gives the :class:`~leadrelay.model.Channel` by Google's published GA4
default channel grouping, with HubSpot's source rules where GA4 is silent; ``apply_touch``
writes an attribution onto a lead while keeping its first touch.

GA4 default channel group → our channel (GA4 has more channels than our enum):

=========================  ==================  ==============================================
GA4 channel                leadrelay channel   why
=========================  ==================  ==============================================
Direct                     direct
Cross-network              paid_search         Google Ads Performance Max / Demand Gen
Paid Shopping              paid_search         shopping ads are bought on search networks
Paid Search                paid_search
Paid Social                paid_social
Paid Video                 display             bought video impressions, like display
Display                    display
Paid Other                 other               paid, but on no known kind of site
Organic Shopping           referral            an unpaid link from a shop site
Organic Social             organic_social
Organic Video              organic_social      YouTube, Vimeo, Twitch are user-posted media
Organic Search             organic_search
Referral                   referral
Email                      email
Affiliates                 affiliate
Audio                      other
SMS                        other
Mobile Push Notifications  other
Unassigned                 other
=========================  ==================  ==============================================

Click ids (auto-tagging) and what they prove on their own:

* ``gclid``, ``gbraid``, ``wbraid``: a Google Ads click → paid_search (GA4 auto-tagging; HubSpot:
  "gclid → Paid search"). GA4 would use the Ads network type, which a URL does not carry, so a
  manual medium that already names a paid channel (``display``, ``cpc`` on a social site) wins.
* ``dclid``: a Campaign Manager 360 / Display & Video 360 click → display.
* ``msclkid``: Microsoft Advertising auto-tagging → paid_search.
* ``ttclid``: TikTok ads → paid_social.
* ``fbclid``, ``li_fat_id``, ``twclid``: NOT proof of payment. Meta adds ``fbclid`` to organic
  shares too, and LinkedIn / X ids likewise ride on unpaid links; alone they say only "a click
  from that social network" → organic_social.

HubSpot's source rule "utm_medium ``paidsocial`` → Paid social" is applied on any source, after
the GA4 paid rules that need a known site.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any
from urllib.parse import unquote, urlsplit

from rich.table import Table
from rich.text import Text

from leadrelay.model import Channel, Lead, Touch

__all__ = [
    "CLICK_ID_PARAMS",
    "HUBSPOT_SOURCE_BY_CHANNEL",
    "TRACKING_PARAMS",
    "UTM_PARAMS",
    "Attribution",
    "apply_touch",
    "channel_to_hubspot_source",
    "classify_channel",
    "hubspot_source_to_channel",
    "is_tracking_param",
    "render_attribution",
    "source_category",
    "tag_url",
]

#: The five campaign parameters stored on a lead, in their usual order.
UTM_PARAMS: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)

#: Ad-platform click ids kept in ``Lead.click_ids``.
CLICK_ID_PARAMS: tuple[str, ...] = (
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "msclkid",
    "fbclid",
    "li_fat_id",
    "ttclid",
    "twclid",
)

#: Every query parameter removed from ``landing_page`` (names compared lower-case).
#: Any other ``utm_*`` or ``hsa_*`` name is removed too, see :func:`is_tracking_param`.
TRACKING_PARAMS: frozenset[str] = frozenset(
    {
        *UTM_PARAMS,
        *CLICK_ID_PARAMS,
        # GA4 extra campaign parameters
        "utm_id",
        "utm_source_platform",
        "utm_creative_format",
        "utm_marketing_tactic",
        # Google: cross-domain linker, Ads, Merchant Center
        "_ga",
        "_gl",
        "_gac",
        "gad_source",
        "gad_campaignid",
        "srsltid",
        # Mailchimp
        "mc_cid",
        "mc_eid",
        # HubSpot email and ads tracking
        "_hsenc",
        "_hsmi",
        "__hstc",
        "__hssc",
        "__hsfp",
        "hsctatracking",
        "hsa_acc",
        "hsa_ad",
        "hsa_cam",
        "hsa_grp",
        "hsa_kw",
        "hsa_la",
        "hsa_mt",
        "hsa_net",
        "hsa_ol",
        "hsa_src",
        "hsa_tgt",
        "hsa_ver",
        # Marketo, Klaviyo, Vero, Adobe, Yandex, Instagram, Pinterest, Snapchat, affiliates
        "mkt_tok",
        "_kx",
        "vero_id",
        "vero_conv",
        "s_cid",
        "yclid",
        "_openstat",
        "igshid",
        "epik",
        "sccid",
        "irclickid",
        "cjevent",
    }
)

_TRACKING_PREFIXES = ("utm_", "hsa_")
_UTM_SET = frozenset(UTM_PARAMS)
_CLICK_ID_SET = frozenset(CLICK_ID_PARAMS)


def is_tracking_param(name: str) -> bool:
    """Whether a query parameter name is tracking noise (case-insensitive, trimmed)."""
    key = name.strip().lower()
    return key in TRACKING_PARAMS or key.startswith(_TRACKING_PREFIXES)


# --- GA4 source categories ---------------------------------------------------------------------


@dataclass(frozen=True)
class _SiteList:
    """A GA4 source category: bare source names (also matched as a host's brand) and domains."""

    names: frozenset[str]
    domains: frozenset[str] = frozenset()


# GA4 matches sources against internal category lists (SOURCE_CATEGORY_SEARCH, _SOCIAL, _VIDEO,
# _SHOPPING); these are the well-known members of each.
_SEARCH = _SiteList(
    names=frozenset(
        {
            "google",
            "bing",
            "yahoo",
            "duckduckgo",
            "baidu",
            "yandex",
            "ecosia",
            "naver",
            "daum",
            "seznam",
            "qwant",
            "startpage",
            "sogou",
            "so",
            "360",
            "aol",
            "ask",
            "msn",
            "yippy",
            "mojeek",
            "onet",
            "rambler",
            "search-results",
            "searchencrypt",
            "coccoc",
            "perplexity",
            "kagi",
        }
    ),
    domains=frozenset({"search.brave.com", "search.aol.com", "go.mail.ru"}),
)
_SOCIAL = _SiteList(
    names=frozenset(
        {
            "facebook",
            "fb",
            "instagram",
            "ig",
            "linkedin",
            "twitter",
            "x",
            "reddit",
            "pinterest",
            "tiktok",
            "snapchat",
            "threads",
            "tumblr",
            "quora",
            "medium",
            "mastodon",
            "bsky",
            "bluesky",
            "discord",
            "whatsapp",
            "telegram",
            "messenger",
            "vk",
            "weibo",
            "wechat",
            "line",
            "xing",
            "meetup",
            "slack",
            "nextdoor",
            "producthunt",
            "ycombinator",
            "stackoverflow",
            "stackexchange",
            "flickr",
            "deviantart",
            "goodreads",
            "yelp",
            "glassdoor",
            "ok",
            "kakao",
            "douban",
            "qzone",
        }
    ),
    domains=frozenset(
        {
            "t.co",
            "lnkd.in",
            "x.com",
            "fb.me",
            "fb.com",
            "pin.it",
            "bsky.app",
            "news.ycombinator.com",
            "t.me",
            "wa.me",
            "vm.tiktok.com",
            "redd.it",
        }
    ),
)
_VIDEO = _SiteList(
    names=frozenset(
        {
            "youtube",
            "vimeo",
            "twitch",
            "dailymotion",
            "youku",
            "bilibili",
            "rutube",
            "niconico",
            "wistia",
            "ted",
            "rumble",
            "iqiyi",
        }
    ),
    domains=frozenset({"youtu.be", "nicovideo.jp", "m.youtube.com"}),
)
_SHOPPING = _SiteList(
    names=frozenset(
        {
            "amazon",
            "ebay",
            "etsy",
            "walmart",
            "aliexpress",
            "alibaba",
            "mercadolibre",
            "mercadolivre",
            "rakuten",
            "shopify",
            "shopping",
            "google shopping",
            "igshopping",
            "target",
            "bestbuy",
            "zalando",
            "otto",
            "allegro",
            "taobao",
            "jd",
            "flipkart",
            "shopee",
            "lazada",
            "temu",
            "wayfair",
            "idealo",
        }
    ),
    domains=frozenset({"shopping.google.com", "shopping.yahoo.com"}),
)

# Sub-domains of search brands that are not a search results page (Gmail, Docs…).
_NOT_SEARCH_SUBDOMAINS = frozenset(
    {
        "mail",
        "docs",
        "drive",
        "calendar",
        "accounts",
        "sites",
        "groups",
        "meet",
        "chat",
        "classroom",
        "support",
        "ads",
        "analytics",
        "outlook",
        "login",
        "answers",
        "finance",
        "shopping",
    }
)

# Second-level labels that sit under a country code (google.co.uk, yahoo.co.jp, baidu.com.cn).
_SECOND_LEVEL = frozenset({"co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go", "gob"})
# Host prefixes that never change which site it is (l.facebook.com, m.youtube.com …).
_NEUTRAL_PREFIXES = frozenset({"www", "m", "l", "lm", "mobile", "web", "out", "amp"})


def _split_host(host: str) -> tuple[list[str], str]:
    """The sub-domain labels and the brand label of a host (``www.google.co.uk`` → google)."""
    labels = [label for label in host.split(".") if label]
    if len(labels) >= 3 and labels[-2] in _SECOND_LEVEL and len(labels[-1]) == 2:
        return labels[:-3], labels[-3]
    if len(labels) >= 2:
        return labels[:-2], labels[-2]
    return [], labels[0] if labels else ""


# Pure functions of a few values that repeat across a lead list (sources, mediums, hosts):
# remembered, in bounded caches.
@lru_cache(maxsize=8192)
def _matches(sites: _SiteList, source: str, *, search: bool = False) -> bool:
    """Whether a source value (a name like ``google`` or a host) is in a source category."""
    value = source.strip().lower().rstrip(".")
    if not value:
        return False
    if value in sites.names:
        return True
    if "." not in value or " " in value:
        return False
    host = value.removeprefix("www.")
    if any(host == d or host.endswith("." + d) for d in sites.domains):
        return True
    subdomains, brand = _split_host(host)
    if brand not in sites.names:
        return False
    meaningful = [label for label in subdomains if label not in _NEUTRAL_PREFIXES]
    return not (search and any(label in _NOT_SEARCH_SUBDOMAINS for label in meaningful))


def source_category(source: str) -> str | None:
    """GA4's category for a source name or host: search, social, video, shopping, or None."""
    for name, sites in (
        ("shopping", _SHOPPING),
        ("search", _SEARCH),
        ("social", _SOCIAL),
        ("video", _VIDEO),
    ):
        if _matches(sites, source, search=name == "search"):
            return name
    return None


# --- GA4 channel rules -------------------------------------------------------------------------

_PAID_MEDIUM_RE = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_SHOP_CAMPAIGN_RE = re.compile(r"^(.*(([^a-df-z]|^)shop|shopping).*)$")
_VIDEO_MEDIUM_RE = re.compile(r"^(.*video.*)$")
_PAID_TEXT = "medium matches ^(.*cp.*|ppc|retargeting|paid.*)$"
_DISPLAY_MEDIUMS = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIUMS = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media"}
)
_EMAIL_VALUES = frozenset({"email", "e-mail", "e_mail", "e mail"})
_REFERRAL_MEDIUMS = frozenset({"referral", "app", "link"})
_NOT_SET_MEDIUMS = frozenset({"", "(not set)", "(none)", "none"})
_PAID_SOCIAL_MEDIUMS = frozenset({"paidsocial", "paid_social", "paid-social", "paid social"})
_PAID_SEARCH_MEDIUMS = frozenset({"paidsearch", "paid_search", "paid-search", "paid search"})

# Click ids that prove a paid click, with the channel and the rule that says so.
_PAID_CLICK_IDS: tuple[tuple[str, Channel, str], ...] = (
    ("gclid", Channel.PAID_SEARCH, "GA4 auto-tagging / HubSpot: gclid is a Google Ads click"),
    ("gbraid", Channel.PAID_SEARCH, "GA4 auto-tagging: gbraid is a Google Ads click"),
    ("wbraid", Channel.PAID_SEARCH, "GA4 auto-tagging: wbraid is a Google Ads click"),
    ("dclid", Channel.DISPLAY, "dclid is a Campaign Manager 360 / DV360 display click"),
    ("msclkid", Channel.PAID_SEARCH, "msclkid is Microsoft Advertising auto-tagging"),
    ("ttclid", Channel.PAID_SOCIAL, "ttclid is a TikTok ads click"),
)
# Click ids that only prove the social network, not that the click was paid.
_SOCIAL_CLICK_IDS = ("fbclid", "li_fat_id", "twclid")
_PAID_CHANNELS = frozenset({Channel.PAID_SEARCH, Channel.PAID_SOCIAL, Channel.DISPLAY})


@lru_cache(maxsize=8192)
def _ga4_manual(source: str, medium: str, campaign: str) -> tuple[Channel, str] | None:
    """GA4's rules for manually tagged traffic, in Google's order; None means Unassigned."""
    paid = bool(_PAID_MEDIUM_RE.match(medium))
    shopping = _matches(_SHOPPING, source) or bool(_SHOP_CAMPAIGN_RE.match(campaign))
    search = _matches(_SEARCH, source, search=True)
    social = _matches(_SOCIAL, source)
    video = _matches(_VIDEO, source)
    rules: tuple[tuple[bool, Channel, str], ...] = (
        (
            source in ("direct", "(direct)") and medium in _NOT_SET_MEDIUMS,
            Channel.DIRECT,
            "GA4 Direct: source is (direct) and medium is (not set)/(none)",
        ),
        (
            "cross-network" in campaign,
            Channel.PAID_SEARCH,
            "GA4 Cross-network: campaign contains cross-network (→ paid_search)",
        ),
        (
            shopping and paid,
            Channel.PAID_SEARCH,
            f"GA4 Paid Shopping: shopping site or shop campaign, {_PAID_TEXT} (→ paid_search)",
        ),
        (search and paid, Channel.PAID_SEARCH, f"GA4 Paid Search: search site, {_PAID_TEXT}"),
        (social and paid, Channel.PAID_SOCIAL, f"GA4 Paid Social: social site, {_PAID_TEXT}"),
        (
            video and paid,
            Channel.DISPLAY,
            f"GA4 Paid Video: video site, {_PAID_TEXT} (→ display)",
        ),
        (
            medium in _PAID_SOCIAL_MEDIUMS,
            Channel.PAID_SOCIAL,
            "HubSpot: utm_medium paidsocial is Paid social",
        ),
        (
            medium in _PAID_SEARCH_MEDIUMS,
            Channel.PAID_SEARCH,
            "GA4 (earlier definition): medium paidsearch is Paid Search",
        ),
        (
            medium in _DISPLAY_MEDIUMS,
            Channel.DISPLAY,
            "GA4 Display: medium is display/banner/expandable/interstitial/cpm",
        ),
        (paid, Channel.OTHER, f"GA4 Paid Other: {_PAID_TEXT} on no known site (→ other)"),
        (
            shopping,
            Channel.REFERRAL,
            "GA4 Organic Shopping: shopping site or shop campaign (→ referral)",
        ),
        (
            social or medium in _SOCIAL_MEDIUMS,
            Channel.ORGANIC_SOCIAL,
            "GA4 Organic Social: social site or a social medium",
        ),
        (
            video or bool(_VIDEO_MEDIUM_RE.match(medium)),
            Channel.ORGANIC_SOCIAL,
            "GA4 Organic Video: video site or medium contains video (→ organic_social)",
        ),
        (
            search or medium == "organic",
            Channel.ORGANIC_SEARCH,
            "GA4 Organic Search: search site or medium is organic",
        ),
        (
            medium in _REFERRAL_MEDIUMS,
            Channel.REFERRAL,
            "GA4 Referral: medium is referral/app/link",
        ),
        (
            source in _EMAIL_VALUES or medium in _EMAIL_VALUES,
            Channel.EMAIL,
            "GA4 Email: source or medium is email/e-mail/e_mail/e mail",
        ),
        (
            medium in ("affiliate", "affiliates"),
            Channel.AFFILIATE,
            "GA4 Affiliates: medium is affiliate",
        ),
        (medium == "audio", Channel.OTHER, "GA4 Audio: medium is audio (→ other)"),
        (
            source == "sms" or medium == "sms",
            Channel.OTHER,
            "GA4 SMS: source or medium is sms (→ other)",
        ),
        (
            medium.endswith("push")
            or "mobile" in medium
            or "notification" in medium
            or source == "firebase",
            Channel.OTHER,
            "GA4 Mobile Push Notifications: medium ends with push or names mobile/notification"
            " (→ other)",
        ),
    )
    for matched, channel, reason in rules:
        if matched:
            return channel, reason
    return None


def _host_of(url: str | None) -> str | None:
    """The lower-case host of a URL, with or without a scheme; None when there is none."""
    if not url:
        return None
    text = url.strip()
    if "://" not in text and not text.startswith("//"):
        text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    host = (host or "").strip(".").lower()
    return host if "." in host or host == "localhost" else None


def _is_own_host(host: str, own: Iterable[str]) -> bool:
    bare = host.removeprefix("www.")
    for domain in own:
        base = domain.strip().strip(".").lower().removeprefix("www.")
        if base and (bare == base or bare.endswith("." + base)):
            return True
    return False


def _classify_referrer(
    referrer: str | None, landing_page: str | None, own_domains: Iterable[str]
) -> tuple[Channel, str]:
    host = _host_of(referrer)
    if host is None:
        return Channel.DIRECT, "no UTMs and no referrer: direct"
    own = [*own_domains]
    landing_host = _host_of(landing_page)
    if landing_host is not None:
        own.append(landing_host)
    if _is_own_host(host, own):
        return Channel.DIRECT, f"no UTMs; referrer {host} is the own site: direct"
    if _matches(_SEARCH, host, search=True):
        return Channel.ORGANIC_SEARCH, f"GA4 Organic Search: referrer {host} is a search site"
    if _matches(_SOCIAL, host):
        return Channel.ORGANIC_SOCIAL, f"GA4 Organic Social: referrer {host} is a social site"
    if _matches(_VIDEO, host):
        return (
            Channel.ORGANIC_SOCIAL,
            f"GA4 Organic Video: referrer {host} is a video site (→ organic_social)",
        )
    return Channel.REFERRAL, f"GA4 Referral: referrer {host} is another site"


def classify_channel(
    *,
    utm_source: str | None,
    utm_medium: str | None,
    utm_campaign: str | None,
    click_ids: Mapping[str, str],
    referrer: str | None,
    own_domains: Iterable[str] = (),
    landing_page: str | None = None,
) -> tuple[Channel, str]:
    """The channel of a visit and the rule that chose it.

    Order: GA4's manual-tagging rules on utm_source / utm_medium / utm_campaign (matched
    case-insensitively, as GA4 does); a paid result stands. Otherwise a paid click id decides
    (Google auto-tagging wins over manual tags, as in GA4's default). Then a non-Unassigned
    UTM result; then a social click id (organic_social). Without UTMs the referrer decides:
    search site → organic_search, social → organic_social, own site (``landing_page``'s host or
    ``own_domains``, sub-domains included) or none → direct, anything else → referral.
    """
    ids = {key.strip().lower() for key, value in click_ids.items() if value}
    source = (utm_source or "").strip().lower()
    medium = (utm_medium or "").strip().lower()
    campaign = (utm_campaign or "").strip().lower()
    has_utm = bool(source or medium or campaign)

    manual = _ga4_manual(source, medium, campaign) if has_utm else None
    if manual is not None and manual[0] in _PAID_CHANNELS:
        return manual
    for name, channel, reason in _PAID_CLICK_IDS:
        if name in ids:
            return channel, reason
    if manual is not None:
        return manual
    for name in _SOCIAL_CLICK_IDS:
        if name in ids:
            return (
                Channel.ORGANIC_SOCIAL,
                f"{name} without paid UTMs: a click from that network, not proof of an ad"
                " (Meta adds fbclid to organic shares too)",
            )
    if has_utm:
        return Channel.OTHER, "GA4 Unassigned: UTMs match no channel rule (→ other)"
    return _classify_referrer(referrer, landing_page, own_domains)


# --- URL parsing -------------------------------------------------------------------------------


def _decode(text: str) -> str:
    """Form-decode (``+`` and ``%20`` are spaces); invalid percent-encoding stays as given."""
    if "%" not in text and "+" not in text:
        return text
    spaced = text.replace("+", " ")
    try:
        return unquote(spaced, errors="strict")
    except UnicodeDecodeError:
        return spaced


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    return text or None


@dataclass(frozen=True)
class Attribution:
    """What one visit says about where a lead came from (the Lead attribution fields)."""

    channel: Channel
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_term: str | None = None
    utm_content: str | None = None
    click_ids: dict[str, str] = field(default_factory=dict)
    landing_page: str | None = None
    referrer: str | None = None
    channel_rule: str = ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (channel as its value), as printed by ``leadrelay tag --json``."""
        return {
            "channel": self.channel.value,
            "utm_source": self.utm_source,
            "utm_medium": self.utm_medium,
            "utm_campaign": self.utm_campaign,
            "utm_term": self.utm_term,
            "utm_content": self.utm_content,
            "click_ids": dict(self.click_ids),
            "landing_page": self.landing_page,
            "referrer": self.referrer,
            "channel_rule": self.channel_rule,
        }

    def to_touch(self, at: datetime | None = None) -> Touch:
        """This attribution as a :class:`~leadrelay.model.Touch`."""
        texts: tuple[Any, ...] = _touch_texts(self)
        return _touch(
            self.channel,
            texts,
            self.click_ids,
            at,
            plain=_plain(self.channel, texts, self.click_ids),
        )


@lru_cache(maxsize=8192)
def _parses(base: str) -> bool:
    """Whether urlsplit reads the part of a landing page before its query (a list's pages
    repeat: remembered, in a bounded cache)."""
    try:
        urlsplit(base if "://" in base or base.startswith(("/", "//")) else "//" + base)
    except ValueError:
        return False
    return True


def _landing_page(base: str, kept: list[str]) -> str | None:
    if not base or not _parses(base):
        return None
    return base + ("?" + "&".join(kept) if kept else "")


def tag_url(
    url: str | None, referrer: str | None = None, *, own_domains: Iterable[str] = ()
) -> Attribution:
    """Read the attribution of a visit from its landing-page URL and referrer.

    Never raises: a URL without a scheme still parses, parameter names match case-insensitively
    (values keep their case, are form-decoded and trimmed; the first occurrence wins), and a URL
    that cannot be parsed yields ``landing_page=None`` with the channel from the referrer.
    ``landing_page`` is the URL minus tracking parameters (others kept in order, as written) and
    minus the fragment.
    """
    text = (url or "").strip()
    before_fragment = text.partition("#")[0]
    base, _, query = before_fragment.partition("?")
    utms: dict[str, str | None] = {}
    click_ids: dict[str, str] = {}
    kept: list[str] = []
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = _decode(raw_name).strip().lower()
        # is_tracking_param, on a name already trimmed and lower-cased
        if name not in TRACKING_PARAMS and not name.startswith(_TRACKING_PREFIXES):
            kept.append(pair)
            continue
        value = _clean(_decode(raw_value))
        if name in _UTM_SET:
            utms.setdefault(name, value)
        elif name in _CLICK_ID_SET and value is not None:
            click_ids.setdefault(name, value)
    landing_page = _landing_page(base.strip(), kept)
    clean_referrer = _clean(referrer)
    channel, rule = classify_channel(
        utm_source=utms.get("utm_source"),
        utm_medium=utms.get("utm_medium"),
        utm_campaign=utms.get("utm_campaign"),
        click_ids=click_ids,
        referrer=clean_referrer,
        own_domains=own_domains,
        landing_page=landing_page,
    )
    # What Attribution(...) builds, without its frozen __init__'s object.__setattr__ per field
    attribution = object.__new__(Attribution)
    object.__setattr__(
        attribution,
        "__dict__",
        {
            "channel": channel,
            "utm_source": utms.get("utm_source"),
            "utm_medium": utms.get("utm_medium"),
            "utm_campaign": utms.get("utm_campaign"),
            "utm_term": utms.get("utm_term"),
            "utm_content": utms.get("utm_content"),
            "click_ids": click_ids,
            "landing_page": landing_page,
            "referrer": clean_referrer,
            "channel_rule": rule,
        },
    )
    return attribution


# --- Lead touches ------------------------------------------------------------------------------


#: The text fields of a touch, in Touch's field order: read from a Lead or an Attribution.
_TOUCH_TEXTS = (*UTM_PARAMS, "landing_page", "referrer")
_touch_texts = attrgetter(*_TOUCH_TEXTS)
#: The Lead fields a touch sets.
_TOUCH_FIELDS = frozenset({*_TOUCH_TEXTS, "channel", "click_ids"})
_STR = frozenset({str})
_STR_OR_NONE = frozenset({str, type(None)})


def _has_attribution(lead: Lead) -> bool:
    return bool(lead.channel or lead.click_ids or any(_touch_texts(lead)))


def _plain(channel: object, texts: tuple[Any, ...], click_ids: object) -> bool:
    """Whether a touch's values are of the Lead's and Touch's own types, which validation
    keeps as they are: a Channel, plain ``str`` texts or None, a ``dict`` of plain ``str``."""
    return (
        type(channel) is Channel
        and _STR_OR_NONE.issuperset(map(type, texts))
        and type(click_ids) is dict
        and (
            not click_ids
            or (
                _STR.issuperset(map(type, click_ids))
                and _STR.issuperset(map(type, click_ids.values()))
            )
        )
    )


def _touch(
    channel: Any, texts: tuple[Any, ...], click_ids: Any, at: datetime | None, *, plain: bool
) -> Touch:
    """``Touch(channel=…, <texts>…, click_ids=dict(click_ids), at=…)``, ``texts`` in
    :data:`_TOUCH_TEXTS` order.

    When the values are ``plain`` (:func:`_plain`) and ``at`` a ``datetime`` or None, they are
    what validation would keep as they are: the Touch is put together from them directly, as
    :func:`leadrelay.model.fast_lead` puts a plain row's Lead together. Else it is validated.
    """
    source, medium, campaign, term, content, landing_page, referrer = texts
    values: dict[str, Any] = {
        "channel": channel,
        "utm_source": source,
        "utm_medium": medium,
        "utm_campaign": campaign,
        "utm_term": term,
        "utm_content": content,
        "click_ids": dict(click_ids),
        "landing_page": landing_page,
        "referrer": referrer,
        "at": at,
    }
    if not plain or (at is not None and type(at) is not datetime):
        return Touch(**values)
    touch = Touch.__new__(Touch)
    object.__setattr__(touch, "__dict__", values)
    object.__setattr__(touch, "__pydantic_fields_set__", set(values))
    object.__setattr__(touch, "__pydantic_extra__", None)
    object.__setattr__(touch, "__pydantic_private__", None)
    return touch


def _trimmed(value: str | None) -> str | None:
    """A plain attribution text as the Lead's validator trims it."""
    return (value.strip() or None) if value else None


def apply_touch(lead: Lead, attribution: Attribution, at: datetime | None = None) -> None:
    """Record a touch on a lead: the latest attribution fields change, the first touch stays.

    A later touch replaces ALL current attribution fields, None included: the fields describe
    one visit, and mixing a new channel with an older visit's UTMs would describe none.
    ``first_touch`` is set only while it is None: to the attribution the lead already carried
    (stamped with ``created_at``) if any, else to this touch (stamped ``at``, default now, UTC).
    """
    channel, click_ids = attribution.channel, attribution.click_ids
    texts: tuple[Any, ...] = _touch_texts(attribution)
    plain = _plain(channel, texts, click_ids)
    if lead.first_touch is None:
        if _has_attribution(lead):
            held: tuple[Any, ...] = _touch_texts(lead)
            held_plain = _plain(lead.channel, held, lead.click_ids)
            first = _touch(lead.channel, held, lead.click_ids, lead.created_at, plain=held_plain)
        else:
            when = at if at is not None else datetime.now(UTC)
            first = _touch(channel, texts, click_ids, when, plain=plain)
        # A valid Touch: set without validating the Lead again.
        lead.__dict__["first_touch"] = first
        lead.__pydantic_fields_set__.add("first_touch")
    if not plain:
        # Not the types an Attribution promises: let the Lead's validation say what is wrong.
        lead.channel = channel
        for name, value in zip(_TOUCH_TEXTS, texts, strict=True):
            setattr(lead, name, value)
        lead.click_ids = dict(click_ids)
        return
    # The values are already of the Lead's types: trimmed as the Lead's validator trims them,
    # they are set in one step instead of nine validated assignments.
    lead.__dict__.update(zip(_TOUCH_TEXTS, map(_trimmed, texts), strict=True))
    lead.__dict__["channel"] = channel
    lead.__dict__["click_ids"] = dict(click_ids)
    lead.__pydantic_fields_set__.update(_TOUCH_FIELDS)


# --- HubSpot hs_analytics_source -----------------------------------------------------------------

#: Our channel → HubSpot ``hs_analytics_source``. HubSpot has no display or affiliate source:
#: both, like ``other``, become OTHER_CAMPAIGNS (so they read back as ``other``).
HUBSPOT_SOURCE_BY_CHANNEL: dict[Channel, str] = {
    Channel.ORGANIC_SEARCH: "ORGANIC_SEARCH",
    Channel.PAID_SEARCH: "PAID_SEARCH",
    Channel.EMAIL: "EMAIL_MARKETING",
    Channel.ORGANIC_SOCIAL: "SOCIAL_MEDIA",
    Channel.REFERRAL: "REFERRALS",
    Channel.DISPLAY: "OTHER_CAMPAIGNS",
    Channel.AFFILIATE: "OTHER_CAMPAIGNS",
    Channel.OTHER: "OTHER_CAMPAIGNS",
    Channel.DIRECT: "DIRECT_TRAFFIC",
    Channel.OFFLINE: "OFFLINE",
    Channel.PAID_SOCIAL: "PAID_SOCIAL",
}

_CHANNEL_BY_HUBSPOT_SOURCE: dict[str, Channel] = {
    "ORGANIC_SEARCH": Channel.ORGANIC_SEARCH,
    "PAID_SEARCH": Channel.PAID_SEARCH,
    "EMAIL_MARKETING": Channel.EMAIL,
    "SOCIAL_MEDIA": Channel.ORGANIC_SOCIAL,
    "REFERRALS": Channel.REFERRAL,
    "OTHER_CAMPAIGNS": Channel.OTHER,
    "DIRECT_TRAFFIC": Channel.DIRECT,
    "OFFLINE": Channel.OFFLINE,
    "PAID_SOCIAL": Channel.PAID_SOCIAL,
    # HubSpot's display labels for the same values ("Organic social", "Offline sources")
    "ORGANIC_SOCIAL": Channel.ORGANIC_SOCIAL,
    "OFFLINE_SOURCES": Channel.OFFLINE,
}


def channel_to_hubspot_source(channel: Channel) -> str:
    """The HubSpot ``hs_analytics_source`` value for a channel."""
    return HUBSPOT_SOURCE_BY_CHANNEL[channel]


def hubspot_source_to_channel(value: str) -> Channel:
    """Our channel for a HubSpot ``hs_analytics_source`` value or label (case-insensitive).

    Values this table does not know (newer portals add some) become ``Channel.OTHER``.
    """
    key = re.sub(r"[\s-]+", "_", value.strip()).upper()
    return _CHANNEL_BY_HUBSPOT_SOURCE.get(key, Channel.OTHER)


# --- CLI rendering -----------------------------------------------------------------------------


def render_attribution(att: Attribution) -> Table:
    """A two-column rich table (field, value) of an attribution, ending with the channel reason."""
    table = Table(title="Attribution", show_header=True)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")

    def cell(value: str | None) -> Text:
        return Text(value) if value is not None else Text("-", style="dim")

    table.add_row("channel", Text(att.channel.value, style="green"))
    for name in UTM_PARAMS:
        table.add_row(name, cell(getattr(att, name)))
    ids = ", ".join(f"{k}={v}" for k, v in att.click_ids.items())
    table.add_row("click_ids", cell(ids or None))
    table.add_row("landing_page", cell(att.landing_page))
    table.add_row("referrer", cell(att.referrer))
    table.add_row("reason", Text(att.channel_rule, style="italic"))
    return table
