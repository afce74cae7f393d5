# Die Statusseiten auf Deutsch.

## Language

language-name = Deutsch

## Times

month-1 = Jan.
month-2 = Feb.
month-3 = März
month-4 = Apr.
month-5 = Mai
month-6 = Juni
month-7 = Juli
month-8 = Aug.
month-9 = Sept.
month-10 = Okt.
month-11 = Nov.
month-12 = Dez.
time-this-year = { $day }. { $month }, { $time } UTC
time-other-year = { $day }. { $month } { $year }, { $time } UTC
day-this-year = { $day }. { $month }
day-other-year = { $day }. { $month } { $year }
ago-now = gerade eben
ago-minutes = { $n ->
    [one] vor { $n } Minute
   *[other] vor { $n } Minuten
}
ago-hours = { $n ->
    [one] vor { $n } Stunde
   *[other] vor { $n } Stunden
}
ago-days = { $n ->
    [one] vor { $n } Tag
   *[other] vor { $n } Tagen
}
in-minutes = { $n ->
    [one] in { $n } Minute
   *[other] in { $n } Minuten
}
in-hours = { $n ->
    [one] in { $n } Stunde
   *[other] in { $n } Stunden
}
in-days = { $n ->
    [one] in { $n } Tag
   *[other] in { $n } Tagen
}

## The overall status

indicator-none = Alle Systeme betriebsbereit
indicator-minor = Geringfügige Störung
indicator-major = Teilweiser Systemausfall
indicator-critical = Schwerer Dienstausfall
indicator-maintenance = Dienst in Wartung

## Statuspage's words

incident-status-investigating = Wird untersucht
incident-status-identified = Ursache gefunden
incident-status-monitoring = Wird beobachtet
incident-status-resolved = Behoben
incident-status-postmortem = Nachbetrachtung
impact-none = keine Auswirkung
impact-minor = geringe Auswirkung
impact-major = erhebliche Auswirkung
impact-critical = kritische Auswirkung
component-status-operational = Betriebsbereit
component-status-degraded_performance = Eingeschränkte Leistung
component-status-partial_outage = Teilausfall
component-status-major_outage = Schwerer Ausfall
component-status-under_maintenance = In Wartung

## The public page

components = Komponenten
past-incidents = Frühere Vorfälle
resolved-at = Behoben { $time }
shown-in-default = (auf Englisch angezeigt)
atom-feed = Atom-Feed
json-feed = JSON
stale = Diese Seite konnte seit { $seconds } s nicht aktualisiert werden; sie zeigt den Stand von damals.
uptime-days = vor { $days } Tagen
uptime-today = Heute
uptime-percent = { $percent } % Verfügbarkeit
uptime-day-up = { $day }: kein Ausfall
uptime-day-down = { $day }: { $minutes ->
    [one] { $minutes } Minute Ausfall
   *[other] { $minutes } Minuten Ausfall
}
feed-title = Statusverlauf von { $page }

## Campaign progress

recovery = Wiederherstellung:
progress-customers = { $restored } von { $total } Kunden wiederhergestellt ({ $percent })
progress-users = { $restored } von { $total } Benutzern ({ $percent })
restored-to = Daten wiederhergestellt auf den Stand vom { $time }.
started = Begonnen { $time }.
complete = Abgeschlossen.
estimated-completion = Voraussichtlich abgeschlossen { $time }.
estimating-completion = Die Dauer wird noch geschätzt.
need-attention = { $count ->
    [one] { $count } Kunde wird von unserem Team betreut.
   *[other] { $count } Kunden werden von unserem Team betreut.
}

## A tenant's private page

tenant-title = { $page } — Ihre Wiederherstellung
tenant-heading = Wiederherstellung Ihrer Daten
stage-queued = In der Warteschlange
stage-restoring = Ihre Daten werden wiederhergestellt
stage-verifying = Ihre wiederhergestellten Daten werden geprüft
stage-awaiting_acceptance = Wiederhergestellt: wartet auf Ihre Bestätigung
stage-restored = Wiederhergestellt
stage-failed = Die Wiederherstellung braucht unser Team
queue-place = Platz in der Warteschlange: { $place }
eta = Voraussichtlich wiederhergestellt: { $time }
eta-estimating = Die Dauer der Wiederherstellung wird noch geschätzt.
tenant-target = Ihre Daten werden auf den Stand vom { $time } wiederhergestellt.
accept-prompt = Bitte prüfen Sie Ihre Daten und bestätigen Sie, dass sie vollständig sind.
accept-button = Wiederhergestellte Daten bestätigen
team-alerted = Unser Team ist informiert und arbeitet an Ihrer Wiederherstellung.
link-invalid = Dieser Link ist nicht gültig. Bitte prüfen Sie den Link in Ihrer Nachricht.
private-unavailable = Ihr Wiederherstellungsstatus ist kurz nicht verfügbar. Bitte versuchen Sie es in einer Minute erneut.

## The tenant's data while it waits (private page). $time: a time, as markup.
export-offer = Während Sie warten, können Sie Ihre Daten mit dem Stand vom { $time } herunterladen.
export-ask = Download meiner Daten vorbereiten
export-ask-sqlite = Als SQLite-Datenbank vorbereiten
export-ready = Ihre Daten mit dem Stand vom { $time } herunterladen
export-size = ZIP, { $bytes } Bytes
export-size-sqlite = SQLite-Datenbank, { $bytes } Bytes
export-until = Dieser Link ist gültig bis { $time }.
export-expired = Ihr Download-Link ist abgelaufen.
export-new-link = Neuen Download-Link anfordern
export-failed = Wir konnten Ihren Download nicht vorbereiten.
export-retry = Erneut versuchen
export-preparing = Ihr Download wird vorbereitet. Diese Seite aktualisiert sich von selbst.

## A restored tenant's downtime and credit (private page). $minutes: one decimal.
sla-downtime = Ihre Daten waren { $minutes } Minuten lang nicht verfügbar. Verfügbarkeit im { $month }: { $percent } %.
sla-tier = Service-Level: { $tier }.
sla-credit = Ihnen steht eine Gutschrift von { $credit } % zu.
sla-no-credit = Ihre monatliche Verfügbarkeit liegt innerhalb Ihres Service-Levels: Es ist keine Gutschrift fällig.

## Scheduled maintenance (public page). $from, $until: times, as markup.
maintenance-active = Laufende Wartung
maintenance-upcoming = Geplante Wartung
maintenance-window = { $from } bis { $until }
maintenance-status-scheduled = Geplant
maintenance-status-in_progress = Läuft
maintenance-status-verifying = Wird überprüft
maintenance-status-completed = Abgeschlossen

## Public page footer.
get-updates = Benachrichtigungen erhalten
contact-support = Support kontaktieren
