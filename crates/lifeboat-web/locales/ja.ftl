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
phases = 製品別:
phase-progress = { $product }: { $percent }
restored-to = { $time } 時点のデータに復元しています。
started = 開始: { $time }。
complete = 完了しました。
estimated-completion = 完了予定: { $time }。
estimating-completion = 完了時刻を見積もっています。
# The promised cadence ([status] update_every): when an unresolved incident's next
# update is due. $time: the time with "(in 40 minutes)" or "(5 minutes ago)".
next-update = 次回の更新予定: { $time }
next-update-overdue = 更新予定時刻を過ぎています: { $time }
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
phase-stage = { $product }: { $stage }
phase-stage-queued = 待機中
phase-stage-restoring = 復元中
phase-stage-verifying = 検証中
phase-stage-awaiting_acceptance = 復元済み（ご確認待ち）
phase-stage-restored = 復元済み
phase-stage-failed = 担当チームが対応中
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

## 購読・サポート・購読解除のフォームとその応答。
form-back = ステータスページに戻る
form-email = メールアドレス
form-invalid-email = 有効なメールアドレスを入力してください。
form-no-message = メッセージを入力してください。
form-message-too-long = メッセージが { $bytes } バイトを超えています。
form-field-too-long = { $field }は { $bytes } バイト以内で入力してください。
form-unknown-component = 選択したコンポーネントの一つがこのページにありません。
subscribe-title = 更新情報を購読する
subscribe-intro = インシデントの発生・変更・解決時にメールでお知らせします。最初にメールアドレスの確認をお願いします。すべてのメールに購読解除のリンクがあります。
subscribe-button = 購読する
subscribe-only-about = 対象（選択なし: すべて）:
support-title = サポートに問い合わせる
support-intro = どのメールアドレスからでもお問い合わせいただけます。サイトのアドレスやアカウント情報は不要です。可能な限り、メールアドレスからお客様のアカウントを特定します。
support-message = メッセージ
support-site = サイトのアドレス（任意）
support-company = 会社名（任意）
support-tenant = アカウントまたはテナント（任意）
support-send = 送信
unsubscribe-title = 購読解除
unsubscribe-ask = インシデントのメールの受信を停止しますか？
unsubscribe-button = 購読を解除する
answer-subscribed-title = メールをご確認ください
answer-subscribed = ありがとうございます。このアドレスでメールを受信できる場合、確認リンク付きのメッセージをお送りしました。リンクを開くと更新情報の受信が始まります。
answer-confirmed-title = 購読しました
answer-confirmed = 購読が確認されました。インシデントについてメールでお知らせします。すべてのメールに購読解除のリンクがあります。
answer-unsubscribed-title = 購読を解除しました
answer-unsubscribed = 購読を解除しました。今後インシデントのメールはお送りしません。
answer-support-title = メッセージを受け付けました
answer-support = ありがとうございます。メッセージを受け付けました。メールでご返信します。
answer-invalid-title = 無効なリンク
answer-invalid = このリンクは無効か、すでに使用されています。
answer-check-title = フォームをご確認ください
answer-try-again = 前のページに戻って、もう一度お試しください。
answer-too-many-title = リクエストが多すぎます
answer-too-many = このアドレスまたはネットワークからのリクエストが多すぎます。しばらくしてからもう一度お試しください。
answer-unavailable-title = もう一度お試しください
answer-unavailable = ただいまリクエストを受け付けられませんでした。1 分後にもう一度お試しください。
answer-too-long-title = 長すぎます
answer-too-long = フォームが { $bytes } バイトを超えています。

## テナントの連絡先と購読者へのメール。
mail-incident-unnamed = インシデント
mail-incident-subject = { $page }: { $incident }（{ $status }）
mail-queued-subject = { $page }: データの復元を順番待ちしています
mail-queued = { $incident } を受けて、お客様のデータの復元を順番待ちしています。
mail-queued-place-of = 復旧の順番: { $tenants } 件中 { $place } 番目。
mail-queued-place = 復旧の順番: { $place } 番目。
mail-queued-eta = 復元が始まると、お客様のページに予定時刻が表示されます。
mail-restoring-subject = { $page }: データを復元しています
mail-restoring = { $incident } を受けて、お客様のデータの復元を開始しました。
mail-awaiting-subject = { $page }: データを復元しました。ご確認ください
mail-awaiting = お客様のデータを復元し、バックアップと照合しました。
mail-awaiting-accept = 内容をご確認のうえ、お客様のページで承認してください。
mail-restored-subject = { $page }: データを復元しました
mail-restored = お客様のデータを復元し、お引き渡ししました。
mail-failed-subject = { $page }: データをまだ復元できていません
mail-failed = お客様のデータの復元はまだ成功していません。担当チームが対応しており、再度復元を行います。
mail-reminder-subject = { $page }: 復元したデータのご確認のお願い
mail-reminder = お客様のデータは復元済みで、ご確認と承認をお待ちしています。
mail-reminder-since = { $time } からお待ちしています。
mail-confirm-subject = { $page }: 購読の確認
mail-confirm = このアドレスで、このステータスページのインシデント情報を受け取るお申し込みがありました（おそらくご本人によるものです）。
mail-confirm-link = 確認するには、次のリンクを開いてください: { $link }
mail-confirm-ignore = お心当たりがない場合は、このメッセージを無視してください。今後メールは送信されません。
mail-support-subject = { $page }: サポートへのお問い合わせについて
mail-support = お客様のアカウントについてサポートへのお問い合わせを受け付けました。データの復元の状況は次のとおりです。
mail-support-queued-place = お客様のデータは復元の順番待ちです（{ $place } 番目）。
mail-support-queued = お客様のデータは復元の順番待ちです。
mail-support-restoring = お客様のデータを現在復元しています。
mail-support-awaiting = お客様のデータを復元しました。お客様のページでご確認のうえ承認してください。
mail-awaiting-part-subject = { $page }: データの一部を復元しました。ご確認ください
mail-awaiting-part = お客様のデータの一部（全 { $steps } 段階中 { $step } 段階目）を復元し、バックアップと照合しました。
mail-awaiting-part-accept = 内容をご確認のうえ、お客様のページで承認してください。残りはその後に復元します。
mail-reminder-part = お客様のデータの一部は復元済みで、ご確認と承認をお待ちしています。残りはその後に復元します。
mail-support-awaiting-part = お客様のデータの一部を復元しました。お客様のページでご確認のうえ承認してください。残りはその後に復元します。
mail-support-restored = お客様のデータを復元しました。
mail-support-failed = お客様のデータの復元はまだ成功していません。担当チームが対応しています。
mail-restore-point = 復元ポイント: { $time } 時点のデータ。
mail-private-link = お客様専用のステータスページ（共有しないでください）: { $link }
mail-status-page = ステータスページ: { $link }
mail-unsubscribe = 配信を停止するには: { $link }
