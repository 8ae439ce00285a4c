#!/usr/bin/perl

# Redis killed with SIGKILL, as in a crash, while requests wait on it,
# and started again on the same port from its append-only file: every
# request in flight is answered, the pairing token or 503, none hangs;
# and the state afterwards is whole, since each of the module's scripts
# is carried out entirely or not at all: a security token is either
# still there or replaced by one pairing token, a pairing token either
# still there or replaced by a pair.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(get_token);
use MdmWatch::Test;

my $LIMIT = MdmWatch::Test::slow(2.5);    # Redis timeout (1s) and slack
my @PERSIST = ('--appendonly', 'yes', '--appendfsync', 'always');

my $t = MdmWatch::Test->new;
$t->start_redis_args(@PERSIST);
$t->start_upstream;
$t->write_config($t->default_http);
$t->start_nginx;

my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';

# the module answers the GetToken of a phone it has recorded; the record
# survives the kills in the append-only file
$t->enroll_phone_ok($phone);

my $mi = $t->machine_info_body(UDID => $watch);
my ($worker) = $t->wait_workers(1);

sub restart {
    $t->start_redis_args(@PERSIST);
}

# security tokens of watches of their own: { udid, st }
sub security_tokens {
    my ($n, $base) = @_;
    my @list;
    for my $i (1 .. $n) {
        my $udid = sprintf '00008301-%016X', $base + $i;
        my $st = $t->challenge(UDID => $udid) // die 'no challenge';
        push @list, { udid => $udid, st => $st };
    }
    return @list;
}

# watches of their own, each with a pairing token and the signed machine
# info that carries it
sub paired_watches {
    my ($n, $base) = @_;
    my @list;
    for my $i (1 .. $n) {
        my $udid = sprintf '00008301-%016X', $base + $i;
        my $st = $t->challenge(UDID => $udid) // die 'no challenge';
        my $token = $t->get_token(udid => $phone, security_token => $st,
            watch_udid => $udid) // die 'no pairing token';
        push @list, { udid => $udid, body => $t->machine_info_body(
            UDID => $udid, PAIRING_TOKEN => $token) };
    }
    return @list;
}

sub send_get_token {
    my ($s) = @_;
    return $t->send_request(method => 'PUT',
        uri => $MdmWatch::Test::CHECKIN_URI,
        headers => [['Content-Type', $MdmWatch::Test::CHECKIN_TYPE]],
        body => get_token(udid => $phone, security_token => $s->{st},
            watch_udid => $s->{udid}), timeout => 10);
}

sub send_enroll {
    my ($body) = @_;
    return $t->send_request(method => 'POST',
        uri => $MdmWatch::Test::ENROLL_URI,
        headers => [['Content-Type', $MdmWatch::Test::CMS_TYPE]],
        body => $body, timeout => 10);
}

sub all_answered {
    my ($what, $answers, $allowed) = @_;
    my @bad = grep { ($_->{status} // 'none') !~ $allowed } @$answers;
    ok(!@bad, "$what: every request in flight is answered")
        or diag(join "\n", map { MdmWatch::Test::describe($_) } @bad);
    my ($slowest) = sort { $b <=> $a } map { $_->{elapsed} } @$answers;
    cmp_ok($slowest, '<', $LIMIT, "$what: none waits ${LIMIT}s");
}

sub st_exists {
    return $t->redis('EXISTS', "mdm_watch:security_token:$_[0]{st}");
}

sub get_token_again {
    my ($s) = @_;
    return $t->get_token_response(udid => $phone, security_token => $s->{st},
        watch_udid => $s->{udid});
}

# pairing tokens issued for this watch to this phone
sub pairing_tokens_of {
    my ($udid) = @_;
    return grep { ($t->redis('GET', $_) // '') eq "$udid $phone" }
        $t->redis_keys('mdm_watch:pairing_token:*');
}

sub recovers {
    my ($what) = @_;
    my $deadline = time + MdmWatch::Test::slow(7);
    my $st;
    while (time < $deadline) {
        $st = $t->challenge(body => $mi, timeout => 3);
        last if defined $st;
        sleep 0.05;
    }
    ok(defined $st, "$what: the module uses the restarted Redis");
}

# killed while stopped: nothing was carried out, nothing is lost

{
    my $what = 'Redis killed while it was stopped';
    my @st = security_tokens(2, 0xa100);
    my @w = paired_watches(2, 0xa000);

    $t->pause_redis;
    my @pending = ((map { send_get_token($_) } @st),
        (map { send_enroll($_->{body}) } @w),
        send_enroll($mi));
    sleep 0.2;
    $t->kill_redis;
    my @answers = map { $t->read_response($_, 10) } @pending;

    all_answered($what, \@answers, qr/^503$/);
    is(scalar(grep { ($_->{headers}{'retry-after'} // '') eq '5' } @answers),
        scalar @answers, "$what: every 503 has Retry-After");

    restart();
    is(scalar(grep { st_exists($_) } @st), 2,
        "$what: after the restart both security tokens are still there");
    is(scalar(map { pairing_tokens_of($_->{udid}) } @w), 2,
        "$what: both pairing tokens are still there");
    is_deeply([$t->redis_keys('mdm_watch:pair:*')], [],
        "$what: no pair was recorded");

    recovers($what);
    for my $s (@st) {
        is(get_token_again($s)->{status}, 200,
            "$what: a GetToken refused then is answered now");
    }
    for my $w (@w) {
        my $res = $t->enroll(body => $w->{body});
        is($res->{status}, 200,
            "$what: a watch refused then pairs now with the same token");
    }
    $t->flush_redis;
}

# killed in the middle of a burst: some scripts ran, some did not, none
# halfway

{
    my $what = 'Redis killed in the middle of a burst';
    my @st = security_tokens(12, 0xb100);
    my @w = paired_watches(8, 0xb000);
    my @before_pt = $t->redis_keys('mdm_watch:pairing_token:*');

    # both kinds interleaved, 3 ms apart, the kill after the tenth: the
    # first are done by then, the next wait on Redis, the last find it
    # gone
    my @jobs;
    for my $i (0 .. $#st) {
        push @jobs, [get_token => $st[$i]];
        push @jobs, [enroll => $w[$i]] if $i < @w;
    }

    my @pending;
    for my $i (0 .. $#jobs) {
        my ($kind, $arg) = @{ $jobs[$i] };
        push @pending, $kind eq 'get_token' ? send_get_token($arg)
                                            : send_enroll($arg->{body});
        $t->kill_redis if $i == 9;
        sleep 0.003;
    }
    my @answers = map { $t->read_response($_, 10) } @pending;
    all_answered($what, \@answers, qr/^(?:200|503)$/);

    my (%ok, %seen);
    for my $i (0 .. $#jobs) {
        my ($kind, $arg) = @{ $jobs[$i] };
        my $id = $arg->{udid};
        next if $seen{$id}++;
        $ok{$id} = ($answers[$i]{status} // 0) == 200;
    }
    note(sprintf '%s: %d of %d answered 200', $what,
        scalar(grep { $_ } values %ok), scalar keys %ok);

    restart();

    my @left;
    for my $s (@st) {
        my $kept = st_exists($s);
        my $issued = pairing_tokens_of($s->{udid});
        push @left, $s if $kept;
        is($kept + $issued, 1, "$what: the security token of $s->{udid}"
            . ' is either still there or replaced by one pairing token');
        ok($issued, "$what: $s->{udid}, answered 200, has its pairing"
            . ' token') if $ok{ $s->{udid} };
    }

    my @paired;
    for my $w (@w) {
        my $token = pairing_tokens_of($w->{udid});
        my $pair = $t->redis('EXISTS', "mdm_watch:pair:$w->{udid}");
        push @paired, $w->{udid} if $pair;
        is($token + $pair, 1, "$what: watch $w->{udid} has either its"
            . ' pairing token or its pair');
        ok($pair, "$what: watch $w->{udid}, answered 200, is paired")
            if $ok{ $w->{udid} };
    }
    is_deeply([$t->redis_members("mdm_watch:phone:$phone")],
        [sort @paired], "$what: the phone's set holds the paired watches");

    recovers($what);
    for my $s (@left) {
        is(get_token_again($s)->{status}, 200,
            "$what: the security token of $s->{udid}, left, is usable");
    }
    for my $w (grep { !$ok{ $_->{udid} } && pairing_tokens_of($_->{udid}) }
        @w)
    {
        my $res = $t->enroll(body => $w->{body});
        is($res->{status}, 200, "$what: watch $w->{udid}, refused then,"
            . ' pairs now with the same token');
    }
}

is(join(' ', $t->wait_workers(1)), $worker,
    'the worker process is the same after both kills');
is(scalar(() = $t->crashes), 0, 'no worker exited on a signal');

$t->finish;
