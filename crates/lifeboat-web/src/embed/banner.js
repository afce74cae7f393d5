// Lifeboat status banner. Include it on any page with
//   <script src="https://status.example.com/embed/banner.js" async></script>
// It reads the status server's public summary (no cookies, no credentials) and, while an
// incident is open, shows one dismissible banner with its name, status and link. When all
// is operational it shows nothing. A dismissal lasts for the browser tab's session.
// The script tag gets data-lifeboat-banner="shown" or "none" once the summary is read.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src || !window.fetch) {
    return;
  }
  var summaryUrl = new URL("../api/v2/summary.json", script.src).href;
  var words = {
    investigating: "Investigating",
    identified: "Identified",
    monitoring: "Monitoring",
    in_progress: "In progress",
    verifying: "Verifying",
    scheduled: "Scheduled"
  };

  function mark(state) {
    script.setAttribute("data-lifeboat-banner", state);
  }

  function dismissedKey(incident) {
    return "lifeboat-banner-dismissed:" + incident.id + ":" + incident.updated_at;
  }

  function isDismissed(key) {
    try {
      return window.sessionStorage.getItem(key) === "1";
    } catch (e) {
      return false;
    }
  }

  function rememberDismissed(key) {
    try {
      window.sessionStorage.setItem(key, "1");
    } catch (e) {
      // Storage refused (private mode, sandbox): the banner goes for this page only.
    }
  }

  function safeLink(href) {
    try {
      var url = new URL(href, script.src);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function show(incident, more) {
    var key = dismissedKey(incident);
    if (isDismissed(key)) {
      mark("dismissed");
      return;
    }
    var banner = document.createElement("div");
    banner.id = "lifeboat-banner";
    banner.setAttribute("role", "status");
    var s = banner.style;
    s.boxSizing = "border-box";
    s.width = "100%";
    s.padding = "10px 16px";
    s.background = "#b3261e";
    s.color = "#fff";
    s.font = "15px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif";
    s.display = "flex";
    s.gap = "12px";
    s.alignItems = "center";
    s.zIndex = "2147483647";
    s.position = "relative";

    var text = document.createElement("span");
    text.style.flex = "1";
    var name = document.createElement("strong");
    name.className = "lifeboat-banner-name";
    name.textContent = incident.name;
    var status = document.createElement("span");
    status.className = "lifeboat-banner-status";
    status.textContent = " \u2014 " + (words[incident.status] || incident.status);
    text.appendChild(name);
    text.appendChild(status);
    if (more > 0) {
      text.appendChild(document.createTextNode(" (+" + more + " more)"));
    }
    banner.appendChild(text);

    var href = safeLink(incident.shortlink);
    if (href) {
      var link = document.createElement("a");
      link.className = "lifeboat-banner-link";
      link.href = href;
      link.rel = "noopener";
      link.textContent = "Status page";
      link.style.color = "#fff";
      link.style.textDecoration = "underline";
      banner.appendChild(link);
    }

    var close = document.createElement("button");
    close.type = "button";
    close.className = "lifeboat-banner-dismiss";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "\u00d7";
    close.style.background = "transparent";
    close.style.border = "0";
    close.style.color = "#fff";
    close.style.fontSize = "20px";
    close.style.cursor = "pointer";
    close.addEventListener("click", function () {
      rememberDismissed(key);
      if (banner.parentNode) {
        banner.parentNode.removeChild(banner);
      }
      mark("dismissed");
    });
    banner.appendChild(close);

    document.body.insertBefore(banner, document.body.firstChild);
    mark("shown");
  }

  function render(summary) {
    var incidents = (summary && summary.incidents) || [];
    var open = incidents.filter(function (i) {
      return i && i.status !== "resolved" && i.status !== "postmortem" && i.name;
    });
    if (open.length === 0) {
      mark("none");
      return;
    }
    open.sort(function (a, b) {
      return String(b.created_at).localeCompare(String(a.created_at));
    });
    show(open[0], open.length - 1);
  }

  function start() {
    fetch(summaryUrl, { credentials: "omit", mode: "cors", cache: "no-store" })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(render)
      .catch(function () {
        mark("unavailable");
      });
  }

  if (document.body) {
    start();
  } else {
    document.addEventListener("DOMContentLoaded", start);
  }
})();
