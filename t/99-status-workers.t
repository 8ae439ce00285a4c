#!/usr/bin/perl

# The counters of the status page are shared by the workers: with two
# workers, the totals are the sums of what each served, and each worker
# shows its Redis connection; a reload keeps the counters; a Redis that
# hangs or answers errors moves the counters of timeouts and errors.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Metrics qw(sample_key status_page);
use MdmWatch::Test;

my $REQUESTS_MAX = 200;

my $t = MdmWatch::Test->new;
my $enroll = $MdmWatch::Test::ENROLL_URI;
my $checkin = $MdmWatch::Test::CHECKIN_URI;

# reuseport: the kernel spreads the connections over both workers
my $http = $t->default_http(redis_timeout => '500ms',
    http => "    log_format pids '\$pid \$request_uri \$mdm_watch_action';\n"
        . "    access_log %%TMP%%/pids.log pids;\n",
    locations => "        location = /status {\n"
        . "            mdm_watch_status;\n"
        . "        }\n");
$http =~ s/listen 127\.0\.0\.1:%%PORT%%;/listen 127.0.0.1:%%PORT%% reuseport;/
    or die 'no listen directive to change';

$t->start_redis;
$t->start_upstream;
$t->write_config($http, worker_processes => 2);
$t->start_nginx;

my @workers = $t->wait_workers(2);
is(scalar @workers, 2, 'nginx runs two workers');

sub metrics { status_page($t) }

sub value {
    my ($m, $name, %labels) = @_;
    return $m->{value}{ sample_key($name, %labels) } // 0;
}

# worker index => [pid, up] of the slots on the page
sub slots {
    my ($m) = @_;
    return { map { $_->{labels}{worker} => [$_->{labels}{pid}, $_->{value}] }
        grep { $_->{name} eq 'mdm_watch_redis_up' } @{ $m->{samples} } };
}

# polls the page until $cond holds, at most $seconds; the last page
sub wait_metrics {
    my ($cond, $seconds) = @_;
    my $deadline = time + MdmWatch::Test::slow($seconds // 5);
    my $m;

    while (1) {
        $m = metrics();
        return $m if $cond->($m) || time >= $deadline;
        sleep 0.05;
    }
}

sub pid_lines {
    my $file = $t->dir . '/pids.log';
    return -f $file ? split /\n/, MdmWatch::Test::slurp($file) : ();
}

# both workers serve

my $m = wait_metrics(sub {
    my $s = slots($_[0]);
    return keys %$s == 2 && !grep { !$_->[1] } values %$s;
});
is_deeply({ map { $_ => $m->{type}{$_} } 'mdm_watch_redis_up' },
    { mdm_watch_redis_up => 'gauge' }, 'the page declares mdm_watch_redis_up');
is_deeply([sort { $a <=> $b } map { $_->[0] } values %{ slots($m) }],
    \@workers, 'mdm_watch_redis_up lists the two workers by their pids');
is_deeply([sort keys %{ slots($m) }], [0, 1], 'under the indexes 0 and 1');
is_deeply([map { $_->[1] } values %{ slots($m) }], [1, 1],
    'both workers have their Redis connection up');

my $before = metrics();
my (%served, $sent);

for my $i (1 .. $REQUESTS_MAX) {
    my $res = $t->request(uri => "$checkin?spread=$i");
    $sent++ if ($res->{status} // 0) == 200;
    %served = ();
    for (pid_lines()) {
        $served{$1}++ if /^(\d+) \Q$checkin\E\?spread=\d+ pass$/;
    }
    last if keys %served == 2 && $i >= 20;
}
is($sent, scalar(grep { /\?spread=/ } pid_lines()),
    "the $sent requests to the check-in URL are all answered and logged");
is(scalar keys %served, 2, 'both workers served some of them')
    or diag(join ', ', map { "$_: $served{$_}" } keys %served);

my $after = metrics();
my $key = sample_key('mdm_watch_passed_total', location => 'checkin');
my $sum = 0;
$sum += $_ for values %served;
is($after->{value}{$key} - $before->{value}{$key}, $sum,
    'the count of pass-throughs is the sum of what both workers passed on')
    or diag(join ', ', map { "$_: $served{$_}" } keys %served);

# a reload keeps the counters

my $master = $t->{pids}{nginx};
$before = metrics();
kill 'HUP', $master;

my $deadline = time + MdmWatch::Test::slow(10);
my @new;
while (time < $deadline) {
    @new = $t->worker_pids;
    last if @new == 2 && !grep { my $p = $_; grep { $_ == $p } @workers } @new;
    sleep 0.05;
}
is(scalar @new, 2, 'after a reload, two new workers run');

$after = wait_metrics(sub {
    my $s = slots($_[0]);
    return join(' ', sort { $a <=> $b } map { $_->[0] } values %$s)
        eq "@new";
});
is_deeply([sort { $a <=> $b } map { $_->[0] } values %{ slots($after) }],
    \@new, 'mdm_watch_redis_up lists the new workers, and not the old ones');

my @lower = grep {
    /_total\b/ && $after->{value}{$_} < $before->{value}{$_}
} keys %{ $before->{value} };
is_deeply(\@lower, [], 'no counter is lower after the reload');
is(value($after, 'mdm_watch_passed_total', location => 'checkin'),
    value($before, 'mdm_watch_passed_total', location => 'checkin'),
    'the pass-throughs counted before the reload are still counted');
is($after->{value}{mdm_watch_redis_command_seconds_count},
    $before->{value}{mdm_watch_redis_command_seconds_count},
    'so are the timed Redis commands');

# a Redis that hangs

my $machine_info = $t->machine_info_body(UDID => $t->pki->udid);
$t->challenge_ok($t->enroll(body => $machine_info),
    'with Redis, a watch is challenged');

$before = metrics();
$t->pause_redis;
my $res = $t->enroll(uri => "$enroll?redis=paused", body => $machine_info);
$t->resume_redis;
$after = metrics();

is($res->{status}, 503, 'with Redis stopped, the watch gets 503');
is(value($after, 'mdm_watch_redis_timeouts_total')
    - value($before, 'mdm_watch_redis_timeouts_total'), 1,
    'the command that timed out is counted');
is(value($after, 'mdm_watch_unavailable_total')
    - value($before, 'mdm_watch_unavailable_total'), 1,
    'the 503 is counted as unavailable');
is(value($after, 'mdm_watch_challenges_total'),
    value($before, 'mdm_watch_challenges_total'),
    'no challenge is counted');
my ($line) = grep { /\?redis=paused / } pid_lines();
like($line // '', qr/ unavailable$/,
    'the access log shows the action unavailable');

# a Redis that is gone, then answers errors

$before = metrics();
$t->stop_redis;

$m = wait_metrics(sub { !grep { $_->[1] } values %{ slots($_[0]) } });
ok(!grep({ $_->[1] } values %{ slots($m) }),
    'with Redis gone, no worker shows its connection up');
cmp_ok(value($m, 'mdm_watch_redis_errors_total', kind => 'connection'), '>',
    value($before, 'mdm_watch_redis_errors_total', kind => 'connection'),
    'the lost connections are counted');

$t->start_fake_redis('--mode', 'error');
$before = metrics();

my ($refused, $errors) = (0, 0);
$deadline = time + MdmWatch::Test::slow(5);
for my $i (1 .. $REQUESTS_MAX) {
    my $r = $t->enroll(uri => "$enroll?redis=error", body => $machine_info);
    $refused++ if ($r->{status} // 0) == 503;
    $errors = value(metrics(), 'mdm_watch_redis_errors_total',
        kind => 'error_reply') - value($before, 'mdm_watch_redis_errors_total',
        kind => 'error_reply');
    last if $errors >= 2 || time >= $deadline;
    sleep 0.05;
}
$after = metrics();

cmp_ok($errors, '>=', 1, 'the error replies of Redis are counted');
is(value($after, 'mdm_watch_unavailable_total')
    - value($before, 'mdm_watch_unavailable_total'), $refused,
    "each of the $refused answers 503 is counted as unavailable");
is(value($after, 'mdm_watch_internal_errors_total'), 0,
    'no request was answered 500');

# a Redis whose replies have the wrong type: an internal error

$t->stop_redis;
$t->start_fake_redis('--mode', 'wrong-type');
$before = metrics();

my $failed = 0;
$deadline = time + MdmWatch::Test::slow(5);
for my $i (1 .. $REQUESTS_MAX) {
    my $r = $t->enroll(uri => "$enroll?redis=wrong-type",
        body => $machine_info);
    if (($r->{status} // 0) == 500) {
        $failed++;
        last;
    }
    last if time >= $deadline;
    sleep 0.05;
}
$after = metrics();

is($failed, 1, 'a reply of the wrong type to a challenge gives 500');
is(value($after, 'mdm_watch_internal_errors_total')
    - value($before, 'mdm_watch_internal_errors_total'), 1,
    'the 500 is counted as an internal error');
($line) = grep { /\?redis=wrong-type error$/ } pid_lines();
ok(defined $line, 'the access log shows the action error');

$t->finish;
