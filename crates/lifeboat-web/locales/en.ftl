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
restored-to = Data restored to { $time }.
started = Started { $time }.
complete = Complete.
estimated-completion = Estimated completion { $time }.
estimating-completion = Estimating completion time.
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
