# ステータスページ（日本語）。

## Language

language-name = 日本語

## Times

month-1 = 1月
month-2 = 2月
month-3 = 3月
month-4 = 4月
month-5 = 5月
month-6 = 6月
month-7 = 7月
month-8 = 8月
month-9 = 9月
month-10 = 10月
month-11 = 11月
month-12 = 12月
time-this-year = { $month }{ $day }日 { $time } UTC
time-other-year = { $year }年{ $month }{ $day }日 { $time } UTC
day-this-year = { $month }{ $day }日
day-other-year = { $year }年{ $month }{ $day }日
ago-now = たった今
ago-minutes = { $n } 分前
ago-hours = { $n } 時間前
ago-days = { $n } 日前
in-minutes = { $n } 分後
in-hours = { $n } 時間後
in-days = { $n } 日後

## The overall status

indicator-none = すべてのシステムが正常に稼働中
indicator-minor = 軽微なサービス障害
indicator-major = 一部のシステムで障害
indicator-critical = 重大なサービス障害
indicator-maintenance = メンテナンス中

## Statuspage's words

incident-status-investigating = 調査中
incident-status-identified = 原因特定
incident-status-monitoring = 経過観察中
incident-status-resolved = 解決済み
incident-status-postmortem = 事後報告
impact-none = 影響なし
impact-minor = 軽微な影響
impact-major = 大きな影響
impact-critical = 重大な影響
component-status-operational = 正常
component-status-degraded_performance = パフォーマンス低下
component-status-partial_outage = 一部停止
component-status-major_outage = 停止
component-status-under_maintenance = メンテナンス中

## The public page

components = コンポーネント
past-incidents = 過去のインシデント
resolved-at = 解決: { $time }
shown-in-default = （英語で表示）
atom-feed = Atom フィード
json-feed = JSON
stale = このページは { $seconds } 秒間更新できていません。その時点の状況を表示しています。
uptime-days = { $days } 日前
uptime-today = 今日
uptime-percent = 稼働率 { $percent } %
uptime-day-up = { $day }: 停止なし
uptime-day-down = { $day }: 停止 { $minutes } 分
feed-title = { $page } ステータス履歴

## Campaign progress

recovery = 復旧状況:
progress-customers = { $total } 件中 { $restored } 件のお客様を復元済み ({ $percent })
progress-users = ユーザー { $total } 人中 { $restored } 人 ({ $percent })
restored-to = { $time } 時点のデータに復元しています。
started = 開始: { $time }。
complete = 完了しました。
estimated-completion = 完了予定: { $time }。
estimating-completion = 完了時刻を見積もっています。
need-attention = { $count } 件は担当チームが対応しています。

## A tenant's private page

tenant-title = { $page } — データの復旧
tenant-heading = データの復旧状況
stage-queued = 復旧の順番待ち
stage-restoring = データを復元しています
stage-verifying = 復元したデータを確認しています
stage-awaiting_acceptance = 復元済み: ご確認をお待ちしています
stage-restored = 復元済み
stage-failed = 復旧に担当チームの対応が必要です
queue-place = 復旧の順番: { $place } 番目
eta = 復元予定時刻: { $time }
eta-estimating = 復元予定時刻を見積もっています。
tenant-target = { $time } 時点のデータに復元します。
accept-prompt = データをご確認のうえ、すべて揃っていることを承認してください。
accept-button = 復元したデータを承認する
team-alerted = 担当チームに通知済みで、復旧に取り組んでいます。
link-invalid = この復旧リンクは無効です。メッセージ内のリンクをご確認ください。
private-unavailable = 復旧状況を一時的に表示できません。1 分後にもう一度お試しください。

## The tenant's data while it waits (private page). $time: a time, as markup.
export-offer = 復旧をお待ちのあいだ、{ $time } 時点のデータをダウンロードできます。
export-ask = データのダウンロードを準備する
export-ask-sqlite = SQLite データベースとして準備する
export-ready = { $time } 時点のデータをダウンロード
export-size = ZIP、{ $bytes } バイト
export-size-sqlite = SQLite データベース、{ $bytes } バイト
export-until = このリンクの有効期限: { $time }
export-expired = ダウンロードリンクの有効期限が切れました。
export-new-link = 新しいダウンロードリンクを取得する
export-failed = ダウンロードを準備できませんでした。
export-retry = もう一度試す
export-preparing = ダウンロードを準備しています。このページは自動で更新されます。

## A restored tenant's downtime and credit (private page). $minutes: one decimal.
sla-downtime = データを利用できなかった時間: { $minutes } 分。{ $month } の稼働率: { $percent }%。
sla-tier = サービスレベル: { $tier }
sla-credit = { $credit }% のサービスクレジットをお支払いします。
sla-no-credit = 今月の稼働率はサービスレベルの範囲内のため、クレジットの対象外です。

## Scheduled maintenance (public page). $from, $until: times, as markup.
maintenance-active = 実施中のメンテナンス
maintenance-upcoming = 予定されているメンテナンス
maintenance-window = { $from } 〜 { $until }
maintenance-status-scheduled = 予定
maintenance-status-in_progress = 実施中
maintenance-status-verifying = 確認中
maintenance-status-completed = 完了

## Public page footer.
get-updates = 更新情報を受け取る
contact-support = サポートに問い合わせる
