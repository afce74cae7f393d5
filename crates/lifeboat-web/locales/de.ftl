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
phases = Nach Produkt:
phase-progress = { $product }: { $percent }
restored-to = Daten wiederhergestellt auf den Stand vom { $time }.
started = Begonnen { $time }.
complete = Abgeschlossen.
estimated-completion = Voraussichtlich abgeschlossen { $time }.
estimating-completion = Die Dauer wird noch geschätzt.
# The promised cadence ([status] update_every): when an unresolved incident's next
# update is due. $time: the time with "(in 40 minutes)" or "(5 minutes ago)".
next-update = Nächstes Update bis { $time }
next-update-overdue = Das nächste Update war fällig bis { $time }
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
phase-stage = { $product }: { $stage }
phase-stage-queued = in der Warteschlange
phase-stage-restoring = wird wiederhergestellt
phase-stage-verifying = wird geprüft
phase-stage-awaiting_acceptance = wiederhergestellt, wartet auf Ihre Bestätigung
phase-stage-restored = wiederhergestellt
phase-stage-failed = braucht unser Team
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

## Die Formulare zum Abonnieren, für den Support und zum Abbestellen, und ihre Antworten.
form-back = Zurück zur Statusseite
form-email = E-Mail
form-invalid-email = Bitte geben Sie eine gültige E-Mail-Adresse an.
form-no-message = Bitte schreiben Sie eine Nachricht.
form-message-too-long = Die Nachricht ist länger als { $bytes } Bytes.
form-field-too-long = { $field }: höchstens { $bytes } Bytes, bitte.
form-unknown-component = Eine der gewählten Komponenten gibt es auf dieser Seite nicht.
subscribe-title = Benachrichtigungen abonnieren
subscribe-intro = Wir schreiben Ihnen, wenn ein Vorfall beginnt, sich ändert oder behoben ist. Sie bestätigen zuerst Ihre Adresse; jede E-Mail enthält einen Link zum Abbestellen.
subscribe-button = Abonnieren
subscribe-only-about = Nur zu (keine Auswahl: zu allem):
support-title = Support kontaktieren
support-intro = Schreiben Sie uns von einer beliebigen E-Mail-Adresse. Sie brauchen weder die Adresse Ihrer Website noch Ihre Kontodaten: Wir finden Ihr Konto, wenn möglich, über Ihre E-Mail-Adresse.
support-message = Nachricht
support-site = Adresse der Website (optional)
support-company = Firma (optional)
support-tenant = Konto oder Mandant (optional)
support-send = Senden
unsubscribe-title = Abbestellen
unsubscribe-ask = Keine E-Mails zu Vorfällen mehr erhalten?
unsubscribe-button = Abbestellen
answer-subscribed-title = Bitte prüfen Sie Ihre E-Mails
answer-subscribed = Danke. Wenn diese Adresse E-Mails empfangen kann, ist eine Nachricht mit einem Bestätigungslink unterwegs: Folgen Sie ihm, um Benachrichtigungen zu erhalten.
answer-confirmed-title = Abonniert
answer-confirmed = Ihr Abonnement ist bestätigt: Wir schreiben Ihnen zu Vorfällen. Jede E-Mail enthält einen Link zum Abbestellen.
answer-unsubscribed-title = Abbestellt
answer-unsubscribed = Sie haben abbestellt: Wir schreiben Ihnen nicht mehr zu Vorfällen.
answer-support-title = Nachricht erhalten
answer-support = Danke, wir haben Ihre Nachricht erhalten. Wir antworten per E-Mail.
answer-invalid-title = Link ungültig
answer-invalid = Dieser Link ist ungültig oder wurde schon verwendet.
answer-check-title = Bitte prüfen Sie das Formular
answer-try-again = Bitte gehen Sie zurück und versuchen Sie es noch einmal.
answer-too-many-title = Zu viele Anfragen
answer-too-many = Von dieser Adresse oder diesem Netz kamen zu viele Anfragen. Bitte versuchen Sie es später noch einmal.
answer-unavailable-title = Bitte versuchen Sie es noch einmal
answer-unavailable = Wir konnten Ihre Anfrage gerade nicht annehmen. Bitte versuchen Sie es in einer Minute noch einmal.
answer-too-long-title = Zu lang
answer-too-long = Das Formular ist länger als { $bytes } Bytes.

## E-Mails an Kontakte von Mandanten und an Abonnenten.
mail-incident-unnamed = einem Vorfall
mail-incident-subject = { $page }: { $incident } ({ $status })
mail-queued-subject = { $page }: Ihre Daten stehen zur Wiederherstellung an
mail-queued = Ihre Daten stehen nach { $incident } zur Wiederherstellung an.
mail-queued-place-of = Platz in der Warteschlange: { $place } von { $tenants }.
mail-queued-place = Platz in der Warteschlange: { $place }.
mail-queued-eta = Ihre Seite zeigt die voraussichtliche Zeit, sobald die Wiederherstellungen laufen.
mail-restoring-subject = { $page }: Ihre Daten werden wiederhergestellt
mail-restoring = Wir haben begonnen, Ihre Daten nach { $incident } wiederherzustellen.
mail-awaiting-subject = { $page }: Ihre Daten sind wiederhergestellt, bitte prüfen Sie sie
mail-awaiting = Ihre Daten sind wiederhergestellt und mit unserer Sicherung abgeglichen.
mail-awaiting-accept = Bitte sehen Sie sie sich an und bestätigen Sie sie auf Ihrer Seite.
mail-restored-subject = { $page }: Ihre Daten sind wiederhergestellt
mail-restored = Ihre Daten sind wiederhergestellt und Ihnen übergeben.
mail-failed-subject = { $page }: Wir konnten Ihre Daten noch nicht wiederherstellen
mail-failed = Die Wiederherstellung Ihrer Daten ist noch nicht gelungen. Unser Team kümmert sich darum und stellt sie erneut wieder her.
mail-reminder-subject = { $page }: Erinnerung, bitte prüfen Sie Ihre wiederhergestellten Daten
mail-reminder = Ihre Daten sind wiederhergestellt und warten darauf, dass Sie sie prüfen und bestätigen.
mail-reminder-since = Sie warten seit { $time }.
mail-confirm-subject = { $page }: Bitte bestätigen Sie Ihr Abonnement
mail-confirm = Jemand, wahrscheinlich Sie, möchte an diese Adresse Benachrichtigungen zu Vorfällen von dieser Statusseite erhalten.
mail-confirm-link = Zum Bestätigen öffnen Sie diesen Link: { $link }
mail-confirm-ignore = Wenn Sie es nicht waren, ignorieren Sie diese Nachricht: Es wird nichts gesendet.
mail-support-subject = { $page }: zu Ihrer Nachricht an den Support
mail-support = Wir haben eine Nachricht an den Support zu Ihrem Konto erhalten. So steht es um die Wiederherstellung Ihrer Daten.
mail-support-queued-place = Ihre Daten stehen zur Wiederherstellung an (Platz { $place }).
mail-support-queued = Ihre Daten stehen zur Wiederherstellung an.
mail-support-restoring = Ihre Daten werden gerade wiederhergestellt.
mail-support-awaiting = Ihre Daten sind wiederhergestellt; bitte prüfen und bestätigen Sie sie auf Ihrer Seite.
mail-awaiting-part-subject = { $page }: Ein Teil Ihrer Daten ist wiederhergestellt, bitte prüfen Sie ihn
mail-awaiting-part = Ein Teil Ihrer Daten (Schritt { $step } von { $steps }) ist wiederhergestellt und mit unserer Sicherung abgeglichen.
mail-awaiting-part-accept = Bitte sehen Sie ihn sich an und bestätigen Sie ihn auf Ihrer Seite; der Rest wird danach wiederhergestellt.
mail-reminder-part = Ein Teil Ihrer Daten ist wiederhergestellt und wartet darauf, dass Sie ihn prüfen und bestätigen; der Rest wird danach wiederhergestellt.
mail-support-awaiting-part = Ein Teil Ihrer Daten ist wiederhergestellt; bitte prüfen und bestätigen Sie ihn auf Ihrer Seite, der Rest wird danach wiederhergestellt.
mail-support-restored = Ihre Daten sind wiederhergestellt.
mail-support-failed = Die Wiederherstellung Ihrer Daten ist noch nicht gelungen. Unser Team kümmert sich darum.
mail-restore-point = Wiederherstellungspunkt: Ihre Daten mit dem Stand von { $time }.
mail-private-link = Ihre private Statusseite (bitte nicht weitergeben): { $link }
mail-status-page = Statusseite: { $link }
mail-unsubscribe = Um diese Nachrichten nicht mehr zu erhalten: { $link }
