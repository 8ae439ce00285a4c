#!/usr/bin/perl

# Without Redis the module cannot answer: it says 503 with Retry-After,
# soon, and the traffic it does not answer goes on.  When Redis comes
# back, so does the service, without a reload of nginx.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(get_token token_update);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(redis_timeout => '500ms');
my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';

sub unavailable {
    my ($what, $res, $max) = @_;
    is($res->{status}, 503, "$what is answered 503")
        or diag(MdmWatch::Test::describe($res));
    like($res->{headers}{'retry-after'} // '', qr/^\d+$/,
        "$what: Retry-After says when to come back");
    ok(!exists $res->{headers}{'x-standin-request'},
        "$what: the answer does not come from the MDM server");
    cmp_ok($res->{elapsed}, '<', $max,
        "$what: the answer comes within ${max}s");
}

# polls until a watch is challenged again, at most $limit seconds
sub recovers {
    my ($what, $limit) = @_;
    my $start = time;
    my $res;

    while (time - $start < $limit) {
        $res = $t->enroll(UDID => $watch, timeout => 5);
        last if defined MdmWatch::Test::challenge_token($res);
        sleep 0.2;
    }
    my $took = time - $start;
    ok(defined MdmWatch::Test::challenge_token($res),
        "$what: the service recovers within ${limit}s")
        or diag(MdmWatch::Test::describe($res));
    note(sprintf '%s: recovered after %.1fs', $what, $took);
}

sub pair_ok {
    my ($what) = @_;
    my $st = $t->challenge(UDID => $watch);
    my $token = $t->get_token(udid => $phone, security_token => $st // '',
        watch_udid => $watch);
    my $res = $t->enroll(UDID => $watch, PAIRING_TOKEN => $token // '');
    is($res->{status}, 200, "$what: a watch pairs from start to end")
        or diag(MdmWatch::Test::describe($res));
}

sub others_go_on {
    my ($what) = @_;
    my $res = $t->request(uri => '/mdm/server', timeout => 3);
    is($res->{status}, 200, "$what: a location without the module answers");
    $res = $t->checkin(token_update(udid => $watch), timeout => 3);
    is($res->{status}, 200, "$what: a TokenUpdate reaches the MDM server");
    ok(exists $res->{headers}{'x-standin-request'},
        "$what: the TokenUpdate is answered by the MDM server");
}

# tokens made while Redis is up
my $st = $t->challenge(UDID => $watch);
my $token = $t->get_token(udid => $phone, security_token => $st // '',
    watch_udid => $watch);
my $late_st = $t->challenge(UDID => $watch);
ok(defined $token && defined $late_st,
    'a pairing token and a security token were made while Redis was up');

# Redis stopped

$t->stop_redis;
my $before = $t->upstream_count;

unavailable('with Redis stopped, a watch without a pairing token',
    $t->enroll(UDID => $watch), 2);
unavailable('with Redis stopped, a watch with a pairing token',
    $t->enroll(UDID => $watch, PAIRING_TOKEN => $token // ''), 2);
unavailable('with Redis stopped, a GetToken',
    $t->get_token_response(udid => $phone, security_token => $late_st // '',
        watch_udid => $watch), 2);
is($t->upstream_count, $before,
    'with Redis stopped, no enrollment or GetToken reached the MDM server');
others_go_on('with Redis stopped');

{
    # the backoff grows to seconds: ten challenges in a row fall in one
    # wait between two connection attempts, and log one error
    my $what = 'with Redis stopped, ten challenges in a row';
    sleep 0.5;
    my $mark = length $t->error_log;
    my @status = map { $t->enroll(UDID => $watch)->{status} } 1 .. 10;
    is_deeply(\@status, [(503) x 10], "$what: each gets 503");
    my $log = substr $t->error_log, $mark;
    my $errors = () = $log =~ /\[error\][^\n]*is unavailable, next/g;
    my $infos = () = $log =~ /\[info\][^\n]*is unavailable, next/g;
    ok($errors >= 1 && $errors <= 2,
        "$what: the log has one error, or two across a connection attempt")
        or diag("$errors errors in:\n$log");
    ok($infos >= 8 - $errors, "$what: the others are logged at info")
        or diag("$infos info lines in:\n$log");
}

$t->start_redis;
recovers('after Redis started again', 10);

# the new Redis is empty: the phone's record is gone with the rest
$t->enroll_phone_ok($phone);
pair_ok('after Redis started again');

# Redis stalled

$t->pause_redis;
$before = $t->upstream_count;

my $pending = $t->send_request(method => 'POST',
    uri => $MdmWatch::Test::ENROLL_URI,
    headers => [['Content-Type', $MdmWatch::Test::CMS_TYPE]],
    body => $t->machine_info_body(UDID => $watch));
my $res = $t->request(uri => '/mdm/server', timeout => 3);
is($res->{status}, 200,
    'while an enrollment waits for a stalled Redis, other locations answer');
cmp_ok($res->{elapsed}, '<', 0.25, 'they answer at once');
$res = $t->read_response($pending, 5);
unavailable('with Redis stalled, a watch without a pairing token', $res, 2.5);
cmp_ok($res->{elapsed}, '>=', 0.4,
    'the module waited about mdm_watch_redis_timeout (500ms) first');

unavailable('with Redis stalled, a GetToken',
    $t->get_token_response(udid => $phone, security_token => $late_st // '',
        watch_udid => $watch), 2.5);

my @pending = map {
    $t->send_request(method => 'POST', uri => $MdmWatch::Test::ENROLL_URI,
        headers => [['Content-Type', $MdmWatch::Test::CMS_TYPE]],
        body => $t->machine_info_body(UDID => $watch))
} 1 .. 4;
my @answers = map { $t->read_response($_, 5) } @pending;
is_deeply([map { $_->{status} // 'none' } @answers], [(503) x 4],
    'with Redis stalled, four watches at once are all answered 503');
cmp_ok((sort { $b <=> $a } map { $_->{elapsed} } @answers)[0], '<', 2.5,
    'all four within the timeout');

is($t->upstream_count, $before + 1,
    'with Redis stalled, no enrollment or GetToken reached the MDM server');
others_go_on('with Redis stalled');

$t->resume_redis;
recovers('after Redis resumed', 10);
pair_ok('after Redis resumed');

$t->finish;
