#!/usr/bin/perl

# The status page: well-formed Prometheus text; the counters of a whole
# pairing; each refusal counted once under its reason and shown as
# reject:<reason> in $mdm_watch_action; 405 for other methods; and the
# page without any location of the module.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Message;
use MdmWatch::Metrics qw(parse_metrics sample_key status_page);
use MdmWatch::Test;

# the phone check knows one phone, not enrolled, and fails for the others
my $NOT_ENROLLED = '00008110-00000000000000AA';
my $LOCATIONS = <<"END";
        location = /status {
            mdm_watch_status;
        }

        location = /phone-check {
            internal;
            if (\$mdm_watch_phone_udid = $NOT_ENROLLED) {
                return 404;
            }
            return 502;
        }
END

my $t = MdmWatch::Test->new->setup(enroll => 'client_max_body_size 4m;',
    checkin => 'mdm_watch_phone_check /phone-check;',
    locations => $LOCATIONS);
my $watch = $t->pki->udid;
my $other_watch = $t->pki->other_udid;
my $phone = $MdmWatch::Test::PHONE;
my $enroll = $MdmWatch::Test::ENROLL_URI;
my $checkin = $MdmWatch::Test::CHECKIN_URI;

my @REASONS = qw(method too_large bad_cms untrusted_signer bad_plist bad_udid
    bad_token replayed udid_mismatch bad_parameters bad_security_token
    bad_signature unsigned wrong_identity unknown_phone
    unknown_security_token);

# the counters of requests, as opposed to those of Redis
my $REQUESTS = qr/^mdm_watch_(?:challenges|pairing_tokens|paired|passed
    |refused|unavailable|internal_errors)_total\b/x;

sub metrics { status_page($t) }

# how the counters of requests moved, those that moved only
sub request_deltas {
    my ($before, $after) = @_;
    my %d;

    for my $k (grep { /$REQUESTS/ } keys %{ $after->{value} }) {
        my $d = $after->{value}{$k} - ($before->{value}{$k} // 0);
        $d{$k} = $d if $d;
    }
    return \%d;
}

sub refused_key { sample_key('mdm_watch_refused_total', reason => $_[0]) }

# the page

my $res = $t->request(uri => '/status');
is($res->{status}, 200, 'the status page is answered');
is($res->{headers}{'content-type'},
    'text/plain; version=0.0.4; charset=utf-8',
    'the status page is Prometheus text, version 0.0.4');
my $m = parse_metrics($res->{body});
is_deeply($m->{errors}, [], 'every line of the page is a HELP, a TYPE or'
    . ' a sample of a declared family, in the exposition format');

is_deeply({ map { $_ => $m->{type}{$_} } keys %{ $m->{type} } }, {
    mdm_watch_challenges_total      => 'counter',
    mdm_watch_pairing_tokens_total  => 'counter',
    mdm_watch_paired_total          => 'counter',
    mdm_watch_passed_total          => 'counter',
    mdm_watch_refused_total         => 'counter',
    mdm_watch_unavailable_total     => 'counter',
    mdm_watch_internal_errors_total => 'counter',
    mdm_watch_redis_errors_total    => 'counter',
    mdm_watch_redis_timeouts_total  => 'counter',
    mdm_watch_redis_command_seconds => 'histogram',
    mdm_watch_redis_up              => 'gauge',
}, 'the page has the families of the module, each with its type');

is_deeply([sort map { $_->{labels}{reason} }
        grep { $_->{name} eq 'mdm_watch_refused_total' } @{ $m->{samples} }],
    [sort @REASONS], 'every reason of refusal is on the page');
is_deeply({ map { $_ => $m->{value}{ refused_key($_) } } @REASONS },
    { map { $_ => 0 } @REASONS }, 'no request was refused yet: all zero');
is_deeply([sort map { $_->{labels}{location} }
        grep { $_->{name} eq 'mdm_watch_passed_total' } @{ $m->{samples} }],
    [qw(checkin enroll)], 'pass-throughs are counted by location');

my ($worker) = $t->wait_workers(1);
is_deeply([map { $_->{key} }
        grep { $_->{name} eq 'mdm_watch_redis_up' } @{ $m->{samples} }],
    [sample_key('mdm_watch_redis_up', worker => 0, pid => $worker)],
    'the one worker has its slot, with its pid');
is($m->{value}{ sample_key('mdm_watch_redis_up', worker => 0,
    pid => $worker) }, 1, 'its Redis connection is up');

$res = $t->request(uri => '/status', method => 'HEAD');
is($res->{status}, 200, 'HEAD of the status page is answered');
is($res->{body}, '', 'HEAD has no body');

$res = $t->request(uri => '/status', method => 'POST', body => 'x');
is($res->{status}, 405, 'POST to the status page is refused with 405');
is($res->{headers}{allow}, 'GET, HEAD', 'with Allow: GET, HEAD');

# a whole pairing

my $before = metrics();

$res = $t->enroll(uri => "$enroll?flow=challenge", UDID => $watch);
my $st = $t->challenge_ok($res, 'the flow: the watch is challenged');
my $token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => $watch);
ok(defined $token, 'the flow: the phone gets a pairing token');
my $paired = $t->machine_info_body(UDID => $watch, PAIRING_TOKEN => $token);
$res = $t->enroll(uri => "$enroll?flow=paired", body => $paired);
is($res->{status}, 200, 'the flow: the watch is enrolled');
$res = $t->checkin(MdmWatch::Message::token_update(udid => $watch),
    uri => "$checkin?flow=pass");
is($res->{status}, 200, 'the flow: the watch sends a TokenUpdate');
$res = $t->request(uri => "$checkin?flow=get");
is($res->{status}, 200, 'the flow: a GET of the check-in URL passes');

my $after = metrics();
is_deeply(request_deltas($before, $after), {
    'mdm_watch_challenges_total'                       => 1,
    'mdm_watch_pairing_tokens_total'                   => 1,
    'mdm_watch_paired_total'                           => 1,
    'mdm_watch_passed_total{location="enroll"}'        => 1,
    'mdm_watch_passed_total{location="checkin"}'       => 2,
}, 'a pairing counts one challenge, one pairing token, one pair, the'
    . ' enrollment passed on and the two check-ins passed on');

my $commands = $after->{value}{mdm_watch_redis_command_seconds_count}
    - $before->{value}{mdm_watch_redis_command_seconds_count};
cmp_ok($commands, '>=', 3, 'the challenge, the GetToken and the pair'
    . ' timed three Redis commands at least') or diag("$commands commands");
cmp_ok($after->{value}{mdm_watch_redis_command_seconds_sum}, '>',
    $before->{value}{mdm_watch_redis_command_seconds_sum},
    'and their time adds to the sum');
is($after->{value}{'mdm_watch_redis_errors_total{kind="error_reply"}'}, 0,
    'Redis answered no error');

# each refusal, once, under its reason

sub refused_ok {
    my ($reason, $status, $send, %o) = @_;
    my $case = "$reason" . ($o{case} ? " ($o{case})" : '');
    my $uri_tag = "refused=$reason" . ($o{tag} // '');

    my $before = metrics();
    my $res = $send->($uri_tag);
    my $after = metrics();

    is($res->{status}, $status, "$case is answered $status")
        or diag(MdmWatch::Test::describe($res));
    is_deeply(request_deltas($before, $after),
        { refused_key($reason) => 1, %{ $o{also} // {} } },
        "$case is counted once, as $reason, and nothing else is"
        . ($o{also} ? ' but ' . join(', ', sort keys %{ $o{also} }) : ''));

    my ($log) = grep { ($_->{uri} // '') =~ /\?\Q$uri_tag\E$/ }
        $t->access_log;
    is($log && $log->{action}, "reject:$reason",
        "$case: the access log shows reject:$reason");
    return $res;
}

sub enroll_case {
    my (%o) = @_;
    return sub { $t->enroll(uri => "$enroll?$_[0]", %o) };
}

sub get_token_case {
    my (%o) = @_;
    return sub { $t->get_token_response(uri => "$checkin?$_[0]", %o) };
}

my $CHALLENGE = { mdm_watch_challenges_total => 1 };

$res = refused_ok('method', 405,
    sub { $t->request(uri => "$enroll?$_[0]", method => 'GET') });
is($res->{headers}{allow}, 'POST, PUT', 'method: Allow: POST, PUT');

refused_ok('too_large', 413, enroll_case(body => 'x' x (1024 * 1024 + 1)));
refused_ok('bad_cms', 400, enroll_case(body => 'this is no CMS'));
refused_ok('untrusted_signer', 403, enroll_case(signer => 'rogue_watch'));
refused_ok('bad_plist', 400, enroll_case(
    body => MdmWatch::Message::sign('this is no plist', pki => $t->pki)));
refused_ok('bad_udid', 400, enroll_case(UDID => undef),
    case => 'machine info without UDID');

$res = refused_ok('bad_token', 403, enroll_case(UDID => $watch,
    PAIRING_TOKEN => 'v1.forged'), also => $CHALLENGE);
$t->challenge_ok($res, 'bad_token: a new challenge is the answer');

$res = refused_ok('replayed', 403, enroll_case(body => $paired),
    also => $CHALLENGE);
$t->challenge_ok($res, 'replayed: a new challenge is the answer');

$st = $t->challenge(UDID => $watch);
$token = $t->get_token(udid => $phone, security_token => $st,
    watch_udid => $watch);
refused_ok('udid_mismatch', 403, enroll_case(signer => 'other_watch',
    UDID => $other_watch, PAIRING_TOKEN => $token // ''),
    case => 'a pairing token of another watch', tag => '&enroll',
    also => $CHALLENGE);

$st = $t->challenge(UDID => $watch);
refused_ok('udid_mismatch', 403, get_token_case(udid => $phone,
    phone_udid => '00008110-0000000000000B0B', security_token => $st,
    watch_udid => $watch), case => 'a GetToken whose UDID is not PhoneUDID',
    tag => '&phone');
refused_ok('udid_mismatch', 403, get_token_case(udid => $phone,
    security_token => $st, watch_udid => $other_watch),
    case => 'a security token of another watch', tag => '&watch');

refused_ok('bad_parameters', 400, get_token_case(udid => $phone,
    security_token => undef, watch_udid => $watch));
refused_ok('bad_udid', 400, get_token_case(udid => $phone,
    security_token => $st, watch_udid => 'not a UDID'),
    case => 'a GetToken with a malformed WatchUDID', tag => '&checkin');
refused_ok('bad_security_token', 403, get_token_case(udid => $phone,
    security_token => 'not-a-uuid', watch_udid => $watch));
refused_ok('bad_signature', 400, get_token_case(udid => $phone,
    security_token => $st, watch_udid => $watch,
    headers => [['Mdm-Signature', 'bm8gQ01T']]));

my $signed_phone = '00008110-0000000000005151';
$res = $t->enroll_phone(udid => $signed_phone, signer => 'phone');
ok($res->{recorded}, 'a phone enrolls with its certificate');

refused_ok('unsigned', 403, get_token_case(udid => $signed_phone,
    security_token => $st, watch_udid => $watch));
refused_ok('wrong_identity', 403, get_token_case(udid => $signed_phone,
    security_token => $st, watch_udid => $watch, signer => 'other_phone'));
refused_ok('unknown_phone', 403, get_token_case(udid => $NOT_ENROLLED,
    security_token => $st, watch_udid => $watch),
    case => 'a phone the phone check says is not enrolled');
refused_ok('unknown_security_token', 403, get_token_case(udid => $phone,
    security_token => MdmWatch::Test::random_uuid(), watch_udid => $watch));

# answers that are not the client's doing

$before = metrics();
$res = $t->get_token_response(uri => "$checkin?failed=phone-check",
    udid => '00008110-00000000000000BB', security_token => $st,
    watch_udid => $watch);
$after = metrics();
is($res->{status}, 503, 'a phone check that fails gives 503');
is_deeply(request_deltas($before, $after),
    { mdm_watch_unavailable_total => 1 },
    'it is counted as unavailable, and not as a refusal');
my $log = $t->access_entry("$checkin?failed=phone-check");
is($log->{action}, 'unavailable', 'the access log shows unavailable');

# the status page of an nginx that uses no other directive of the module

$t->stop_nginx;
$t->write_config(<<'END');
    server {
        listen 127.0.0.1:%%PORT%%;

        location = /status {
            mdm_watch_status;
        }
    }
END
$t->start_nginx;

$m = metrics();
is_deeply($m->{errors}, [], 'without mdm_watch_redis or any location of'
    . ' the module, the status page is well-formed');
is($m->{value}{ refused_key('bad_cms') }, 0,
    'and its counters start from zero');
is_deeply([grep { $_->{name} eq 'mdm_watch_redis_up' } @{ $m->{samples} }],
    [], 'and no worker has a Redis connection to show');

$t->finish;
