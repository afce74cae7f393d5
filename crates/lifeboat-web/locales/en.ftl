# The status pages in English, the default language. Every page message has the same id
# in every language; a message missing from another language falls back to this one.
# Placeables are filled by the code; numbers are plain integers.

## Language

# The language's own name, for the language links.
language-name = English

## Times

month-1 = Jan
month-2 = Feb
month-3 = Mar
month-4 = Apr
month-5 = May
month-6 = Jun
month-7 = Jul
month-8 = Aug
month-9 = Sep
month-10 = Oct
month-11 = Nov
month-12 = Dec
# $month: the month's short name (month-N); $month-number: 1-12.
time-this-year = { $month } { $day }, { $time } UTC
time-other-year = { $month } { $day }, { $year }, { $time } UTC
day-this-year = { $month } { $day }
day-other-year = { $month } { $day }, { $year }
ago-now = just now
ago-minutes = { $n ->
    [one] { $n } minute ago
   *[other] { $n } minutes ago
}
ago-hours = { $n ->
    [one] { $n } hour ago
   *[other] { $n } hours ago
}
ago-days = { $n ->
    [one] { $n } day ago
   *[other] { $n } days ago
}
in-minutes = { $n ->
    [one] in { $n } minute
   *[other] in { $n } minutes
}
in-hours = { $n ->
    [one] in { $n } hour
   *[other] in { $n } hours
}
in-days = { $n ->
    [one] in { $n } day
   *[other] in { $n } days
}

## The overall status

indicator-none = All Systems Operational
indicator-minor = Minor Service Outage
indicator-major = Partial System Outage
indicator-critical = Major Service Outage
indicator-maintenance = Service Under Maintenance

## Statuspage's words

incident-status-investigating = Investigating
incident-status-identified = Identified
incident-status-monitoring = Monitoring
incident-status-resolved = Resolved
incident-status-postmortem = Postmortem
impact-none = no impact
impact-minor = minor impact
impact-major = major impact
impact-critical = critical impact
component-status-operational = Operational
component-status-degraded_performance = Degraded performance
component-status-partial_outage = Partial outage
component-status-major_outage = Major outage
component-status-under_maintenance = Under maintenance

## The public page

components = Components
past-incidents = Past incidents
resolved-at = Resolved { $time }
# After an update shown in the default language because it has no translation.
shown-in-default = (shown in English)
atom-feed = Atom feed
json-feed = JSON
stale = This page could not be updated for { $seconds } s; it shows the status as it was then.
uptime-days = { $days } days ago
uptime-today = Today
uptime-percent = { $percent } % uptime
uptime-day-up = { $day }: no outage
uptime-day-down = { $day }: { $minutes ->
    [one] { $minutes } minute of outage
   *[other] { $minutes } minutes of outage
}
feed-title = { $page } status history

## Campaign progress

recovery = Recovery:
progress-customers = { $restored } of { $total } customers restored ({ $percent })
progress-users = { $restored } of { $total } users ({ $percent })
# A phased campaign: each phase's share of the customers restored. $product: the names
# of the phase's components; $percent: e.g. 40%.
phases = By product:
phase-progress = { $product }: { $percent }
restored-to = Data restored to { $time }.
started = Started { $time }.
complete = Complete.
estimated-completion = Estimated completion { $time }.
estimating-completion = Estimating completion time.
# The promised cadence ([status] update_every): when an unresolved incident's next
# update is due. $time: the time with "(in 40 minutes)" or "(5 minutes ago)".
next-update = Next update by { $time }
next-update-overdue = The next update was due by { $time }
need-attention = { $count ->
    [one] { $count } needs attention from our team.
   *[other] { $count } need attention from our team.
}

## A tenant's private page

tenant-title = { $page } — your recovery
tenant-heading = Your data recovery
stage-queued = Queued for recovery
stage-restoring = Restoring your data
stage-verifying = Verifying your restored data
stage-awaiting_acceptance = Restored: awaiting your acceptance
stage-restored = Restored
stage-failed = Recovery needs attention
# A tenant's stage in one phase of a phased campaign: "Wiki: restored".
phase-stage = { $product }: { $stage }
phase-stage-queued = queued
phase-stage-restoring = restoring
phase-stage-verifying = verifying
phase-stage-awaiting_acceptance = restored, awaiting your acceptance
phase-stage-restored = restored
phase-stage-failed = needs attention
queue-place = Place in the recovery queue: { $place }
eta = Estimated time of restoration: { $time }
eta-estimating = Estimating the time of restoration.
tenant-target = Your data is restored as it was at { $time }.
accept-prompt = Please check your data and confirm that it is complete.
accept-button = Accept the restored data
team-alerted = Our team has been alerted and is working on your recovery.
link-invalid = This recovery link is not valid. Please check the link in your message.
private-unavailable = Your recovery status is briefly unavailable. Please try again in a minute.

## The tenant's data while it waits (private page). $time: a time, as markup.
export-offer = You can download your data as it was at { $time }, while you wait.
export-ask = Prepare a download of my data
export-ask-sqlite = Prepare it as an SQLite database
export-ready = Download your data as it was at { $time }
export-size = zip, { $bytes } bytes
export-size-sqlite = SQLite database, { $bytes } bytes
export-until = This link works until { $time }.
export-expired = Your download link has expired.
export-new-link = Get a new download link
export-failed = We could not prepare your download.
export-retry = Try again
export-preparing = Your download is being prepared. This page refreshes by itself.

## A restored tenant's downtime and credit (private page). $minutes: one decimal.
sla-downtime = Your data was unavailable for { $minutes } minutes. Uptime in { $month }: { $percent }%.
sla-tier = Service level: { $tier }.
sla-credit = A service credit of { $credit }% is owed to you.
sla-no-credit = Your monthly uptime stays within your service level: no credit is due.

## Scheduled maintenance (public page). $from, $until: times, as markup.
maintenance-active = Maintenance in progress
maintenance-upcoming = Scheduled maintenance
maintenance-window = { $from } to { $until }
maintenance-status-scheduled = Scheduled
maintenance-status-in_progress = In progress
maintenance-status-verifying = Verifying
maintenance-status-completed = Completed

## Public page footer.
get-updates = Get updates
contact-support = Contact support

## The subscribe, support and unsubscribe forms and their answers.
form-back = Back to the status page
form-email = Email
form-invalid-email = Please give a valid email address.
form-no-message = Please write a message.
form-message-too-long = The message is longer than { $bytes } bytes.
# $field: the field's label; $bytes: its longest length.
form-field-too-long = { $field }: at most { $bytes } bytes, please.
form-unknown-component = One of the chosen components is not on this page.
subscribe-title = Subscribe to updates
subscribe-intro = We email you when an incident opens, changes or is resolved. You confirm your address first; every email has a link to unsubscribe.
subscribe-button = Subscribe
subscribe-only-about = Only about (none: everything):
support-title = Contact support
support-intro = Write to us from any email address. You do not need your site's address or your account details: we find your account from your email if we can.
support-message = Message
support-site = Site address (optional)
support-company = Company (optional)
support-tenant = Account or tenant (optional)
support-send = Send
unsubscribe-title = Unsubscribe
unsubscribe-ask = Stop receiving incident emails?
unsubscribe-button = Unsubscribe
answer-subscribed-title = Check your email
answer-subscribed = Thank you. If this address can receive email, a message with a confirmation link is on its way: follow it to start receiving updates.
answer-confirmed-title = Subscribed
answer-confirmed = Your subscription is confirmed: we will email you about incidents. Every email has a link to unsubscribe.
answer-unsubscribed-title = Unsubscribed
answer-unsubscribed = You are unsubscribed: we will not email you about incidents any more.
answer-support-title = Message received
answer-support = Thank you, we received your message. We will answer by email.
answer-invalid-title = Link not valid
answer-invalid = This link is not valid, or it was already used.
answer-check-title = Please check the form
answer-try-again = Please go back and try again.
answer-too-many-title = Too many requests
answer-too-many = We received too many requests from this address or network. Please try again later.
answer-unavailable-title = Please try again
answer-unavailable = We could not take your request just now. Please try again in a minute.
answer-too-long-title = Too long
answer-too-long = The form is longer than { $bytes } bytes.

## Emails to tenant contacts and subscribers. $page: the status page's name; $incident:
## the incident's name; $time: a time for people; $link: an address.
mail-incident-unnamed = an incident
mail-incident-subject = { $page }: { $incident } ({ $status })
mail-queued-subject = { $page }: your data is queued to be restored
mail-queued = Your data is queued to be restored after { $incident }.
mail-queued-place-of = Place in the queue: { $place } of { $tenants }.
mail-queued-place = Place in the queue: { $place }.
mail-queued-eta = Your page shows the estimated time once restores are under way.
mail-restoring-subject = { $page }: your data is being restored
mail-restoring = We have started restoring your data after { $incident }.
mail-awaiting-subject = { $page }: your data is restored, please check it
mail-awaiting = Your data is restored and checked against our backup.
mail-awaiting-accept = Please look at it and accept it on your page.
mail-restored-subject = { $page }: your data is restored
mail-restored = Your data is restored and handed back to you.
mail-failed-subject = { $page }: we could not restore your data yet
mail-failed = Restoring your data did not succeed yet. Our operators are on it and will restore it again.
mail-reminder-subject = { $page }: reminder, please check your restored data
mail-reminder = Your data was restored and waits for you to check and accept it.
mail-reminder-since = It has been waiting since { $time }.
mail-confirm-subject = { $page }: confirm your subscription
mail-confirm = Someone, probably you, asked to receive incident updates from this status page at this address.
mail-confirm-link = To confirm, open this link: { $link }
mail-confirm-ignore = If it was not you, ignore this message: nothing will be sent.
mail-support-subject = { $page }: about your message to support
mail-support = We received a message to support about your account. Here is where the restore of your data stands.
mail-support-queued-place = Your data is queued to be restored (place { $place }).
mail-support-queued = Your data is queued to be restored.
mail-support-restoring = Your data is being restored right now.
mail-support-awaiting = Your data is restored; please check it and accept it on your page.
mail-awaiting-part-subject = { $page }: part of your data is restored, please check it
mail-awaiting-part = Part of your data (step { $step } of { $steps }) is restored and checked against our backup.
mail-awaiting-part-accept = Please look at it and accept it on your page; the rest is restored after that.
mail-reminder-part = Part of your data was restored and waits for you to check and accept it; the rest is restored after that.
mail-support-awaiting-part = Part of your data is restored; please check it and accept it on your page, the rest is restored after that.
mail-support-restored = Your data is restored.
mail-support-failed = Restoring your data did not succeed yet. Our operators are on it.
mail-restore-point = Restore point: your data as it was at { $time }.
mail-private-link = Your private status page (do not share it): { $link }
mail-status-page = Status page: { $link }
mail-unsubscribe = To stop receiving these messages: { $link }
