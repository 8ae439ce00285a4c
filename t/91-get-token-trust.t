#!/usr/bin/perl

# Whom the module gives a pairing token: only a phone it has recorded
# as enrolled, and, when that phone's record names an identity, only
# the device of that identity: the signer of the GetToken's
# Mdm-Signature, else the TLS client certificate nginx verified.  An
# Mdm-Signature that does not verify is answered 400; a GetToken that is
# refused leaves Redis as it was, its security token still usable.  How
# the module learns devices is in 90-registry.t, the subrequest that
# asks the MDM server about an unknown phone in 92-phone-check.t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;

use MdmWatch::Message qw(get_token parse_token_data);
use MdmWatch::Test;

my ($tls) = MdmWatch::Test::free_ports(1);
my $t = MdmWatch::Test->new;
my $pki = $t->pki;
my $watch = $pki->udid;
my $phone = $pki->phone_udid;
my $other_phone = $pki->other_phone_udid;

sub config {
    my (@http) = @_;
    return $t->default_http(server => $t->tls_server_directives($tls),
        http => join '', map { "    $_;\n" } @http);
}

$t->start_redis;
$t->start_upstream;
$t->write_config(config());
$t->start_nginx;

# phones of this test, made from a number, that nothing enrolled yet
sub stranger { sprintf '00008110-%016X', 0x9100 + $_[0] }

sub security_token {
    return $t->challenge(UDID => $watch) // die 'no challenge';
}

sub garbage { encode_base64(MdmWatch::Test::random_bytes(900), '') }

# a GetToken of a phone for $watch with a new security token, sent as
# %o says: phone (the UDID), signer (Mdm-Signature of that device),
# signature (this Mdm-Signature), body (a function of the body signed,
# giving the body sent), tls and client (over TLS, with that client
# certificate); returns the answer and the security token
sub send_get_token {
    my (%o) = @_;
    my $st = $o{st} // security_token();
    my $body = get_token(udid => $o{phone} // $phone, security_token => $st,
        watch_udid => $watch);
    my @headers = (['Content-Type', $MdmWatch::Test::CHECKIN_TYPE]);

    push @headers, ['Mdm-Signature', $t->mdm_signature($body, $o{signer})]
        if defined $o{signer};
    push @headers, ['Mdm-Signature', $o{signature}] if defined $o{signature};
    $body = $o{body}->($body) if $o{body};

    my %req = (method => 'PUT', uri => $MdmWatch::Test::CHECKIN_URI,
        headers => \@headers, body => $body);
    my $res = $o{tls} ? $t->tls_request(port => $tls, client => $o{client},
                                        %req)
                      : $t->request(%req);
    return ($res, $st);
}

sub pairing_tokens_for {
    my ($udid) = @_;
    my $want = "$watch " . uc $udid;
    return grep { ($t->redis('GET', $_) // '') eq $want }
        $t->redis_keys('mdm_watch:pairing_token:*');
}

sub answered {
    my ($what, %o) = @_;
    my $udid = $o{phone} // $phone;
    my $before = $t->upstream_count;
    my @tokens = pairing_tokens_for($udid);

    my ($res, $st) = send_get_token(%o);
    is($res->{status}, 200, "$what is answered 200")
        or diag(MdmWatch::Test::describe($res) . ($res->{tls_log} // ''));
    ok(length(parse_token_data($res->{body}) // ''), "$what: TokenData");
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    is($t->redis('EXISTS', "mdm_watch:security_token:$st"), 0,
        "$what: the security token is used up");
    is(scalar(() = pairing_tokens_for($udid)), @tokens + 1,
        "$what: a pairing token for the watch and the phone is recorded");
    return $res;
}

sub refused {
    my ($what, $status, %o) = @_;
    my $st = $o{st} // security_token();
    my $snapshot = $t->redis_snapshot;
    my $before = $t->upstream_count;

    my ($res) = send_get_token(%o, st => $st);
    is($res->{status}, $status, "$what is answered $status")
        or diag(MdmWatch::Test::describe($res) . ($res->{tls_log} // ''));
    is(parse_token_data($res->{body}), undef, "$what: no TokenData");
    ok(!exists $res->{headers}{'x-standin-request'},
        "$what: the answer comes from nginx");
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    $t->redis_unchanged_ok($snapshot,
        "$what: Redis is unchanged, the security token still there");
    return ($res, $st);
}

# phones the module does not know

{
    my $udid = stranger(1);
    my $what = 'a GetToken of a phone the module does not know';
    my $mark = $t->log_mark;
    my (undef, $st) = refused($what, 403, phone => $udid);
    $t->log_like(qr/\[warn\](?=[^\n]*unknown phone)(?=[^\n]*\Q$udid\E)/,
        "$what: the error log warns of an unknown phone, naming it", $mark);

    my $res = $t->enroll_phone(udid => $udid);
    ok($res->{recorded}, 'the phone sends a TokenUpdate the MDM server'
        . ' accepts, and is recorded');
    answered('then the GetToken with the same security token',
        phone => $udid, st => $st);

    $udid = stranger(2);
    $what = 'a GetToken of a phone whose TokenUpdate the MDM server refused';
    $res = $t->enroll_phone(udid => $udid,
        headers => [['X-Standin-Status', 403]]);
    is($res->{status}, 403, 'the MDM server refuses the TokenUpdate of a'
        . ' phone');
    ok($t->registry_barrier, 'the module records, but not that phone');
    refused($what, 403, phone => $udid);

    $udid = stranger(3);
    $res = $t->enroll_phone(udid => $udid, message => 'Authenticate');
    ok($res->{recorded}, 'a phone whose Authenticate the MDM server accepts'
        . ' is recorded');
    answered('a GetToken of a phone that sent only Authenticate',
        phone => $udid);

    $udid = stranger(4);
    $res = $t->checkin(MdmWatch::Message::token_update(udid => $udid),
        headers => [['Mdm-Signature', garbage()]]);
    is($res->{status}, 200, 'the MDM server accepts a TokenUpdate with a'
        . ' garbage Mdm-Signature');
    ok($t->registry_barrier, 'the module records, but not that phone');
    refused('a GetToken of a phone whose TokenUpdate had a garbage'
        . ' Mdm-Signature', 403, phone => $udid);
}

# a phone whose record names its identity

my $res = $t->enroll_phone(udid => $phone, signer => 'phone');
ok($res->{recorded}, 'the phone is recorded with the identity of its'
    . ' signed TokenUpdate');
$res = $t->enroll_phone(udid => $other_phone, signer => 'other_phone');
ok($res->{recorded}, 'so is another phone, with its own identity');

answered('a GetToken signed by the phone on record', signer => 'phone');
answered('a GetToken of the other phone signed by itself',
    phone => $other_phone, signer => 'other_phone');

{
    my $what = 'a GetToken signed by another device';
    my $mark = $t->log_mark;
    refused($what, 403, signer => 'other_phone');
    $t->log_like(
        qr/\[warn\](?=[^\n]*signed by another device)(?=[^\n]*\Q$phone\E)/,
        "$what: the error log warns, naming the phone", $mark);
}
refused('a GetToken of the other phone signed by the phone', 403,
    phone => $other_phone, signer => 'phone');
refused('an unsigned GetToken of a phone whose identity is on record', 403);

for my $case (
    ['a GetToken with a garbage Mdm-Signature', signature => garbage()],
    ['a GetToken whose Mdm-Signature is no base64',
        signature => '*** not base64 ***'],
    ['a GetToken changed after the phone signed it: another live security'
        . ' token', signer => 'phone',
        body => sub {
            my ($body, $other) = @_;
            return $body =~ s/<string>[0-9A-F-]{36}</<string>$other</r;
        }],
    ['a GetToken signed by a key its certificate does not hold',
        signature => sub {
            $t->mdm_signature($_[0], 'phone', certificate => 'other_phone')
        }],
    ['a GetToken whose Mdm-Signature carries no certificate',
        signature => sub { $t->mdm_signature($_[0], 'phone', nocerts => 1) }],
    ['a GetToken with the Mdm-Signature of another GetToken of the phone',
        signature => sub {
            $t->mdm_signature(get_token(udid => $phone,
                security_token => MdmWatch::Test::random_uuid(),
                watch_udid => $watch), 'phone')
        }],
) {
    my ($what, %o) = @$case;
    my $mark = $t->log_mark;

    # another live security token for the changed body, made before
    # refused takes its snapshot
    if ($o{body}) {
        my ($change, $other) = ($o{body}, security_token());
        $o{body} = sub { $change->($_[0], $other) };
    }

    # a signature made of the body is made once the body is known
    if (ref $o{signature}) {
        my $sign = delete $o{signature};
        my $st = security_token();
        $o{st} = $st;
        $o{signature} = $sign->(get_token(udid => $phone,
            security_token => $st, watch_udid => $watch));
    }
    refused($what, 400, %o);
    $t->log_like(qr/\[warn\][^\n]*signature/i,
        "$what: the error log warns about the signature", $mark);
}

# a phone recorded without an identity

{
    my $udid = stranger(5);
    my $res = $t->enroll_phone(udid => $udid);
    ok($res->{recorded}, 'a phone is recorded without an identity');
    answered('an unsigned GetToken of a phone without identity',
        phone => $udid);
    answered('a GetToken of a phone without identity, signed by it',
        phone => $udid, signer => 'phone');
    answered('a GetToken of a phone without identity, signed by another'
        . ' device', phone => $udid, signer => 'other_phone');
    refused('a GetToken of a phone without identity, with a garbage'
        . ' Mdm-Signature', 400, phone => $udid, signature => garbage());
}

# the TLS client certificate nginx verified, for an unsigned GetToken

answered('an unsigned GetToken over TLS with the client certificate of the'
    . ' phone', tls => 1, client => 'phone');
refused('an unsigned GetToken over TLS with the client certificate of'
    . ' another device', 403, tls => 1, client => 'other_phone');
refused('an unsigned GetToken over TLS without a client certificate', 403,
    tls => 1);
answered('a GetToken signed by the phone over TLS with the client'
    . ' certificate of another device', tls => 1, client => 'other_phone',
    signer => 'phone');
refused('a GetToken signed by another device over TLS with the client'
    . ' certificate of the phone', 403, tls => 1, client => 'phone',
    signer => 'other_phone');

# with Redis stopped, a signed GetToken gets 503 as before

$t->stop_redis;
($res) = send_get_token(signer => 'phone',
    st => MdmWatch::Test::random_uuid());
is($res->{status}, 503, 'with Redis stopped, a signed GetToken is answered'
    . ' 503');
is($res->{headers}{'retry-after'}, 5, '... with Retry-After: 5');
$t->start_redis;

# mdm_watch_require_signature

sub config_refused {
    my ($what, $config, $why) = @_;
    $t->write_config($config);
    my ($code, $out) = $t->nginx_test;
    isnt($code, 0, "$what: nginx -t fails");
    like($out, $why, "$what: the message names the directive")
        or diag($out);
}

config_refused('mdm_watch_require_signature neither on nor off',
    config('mdm_watch_require_signature maybe'),
    qr/\[emerg\][^\n]*mdm_watch_require_signature/);
config_refused('mdm_watch_require_signature in a location',
    $t->default_http(checkin => "            mdm_watch_require_signature"
        . " off;\n"),
    qr/\[emerg\][^\n]*mdm_watch_require_signature/);

$t->stop_nginx;
$t->write_config(config('mdm_watch_require_signature off'));
$t->start_nginx;

# the new Redis is empty
ok($t->enroll_phone(udid => $phone, signer => 'phone')->{recorded},
    'the phone is recorded again, with its identity');

answered('with mdm_watch_require_signature off, an unsigned GetToken of a'
    . ' phone whose identity is on record');
answered('with mdm_watch_require_signature off, a signed GetToken',
    signer => 'phone');
refused('with mdm_watch_require_signature off, a GetToken signed by another'
    . ' device', 403, signer => 'other_phone');
refused('with mdm_watch_require_signature off, a GetToken with a garbage'
    . ' Mdm-Signature', 400, signature => garbage());
refused('with mdm_watch_require_signature off, a GetToken of a phone the'
    . ' module does not know', 403, phone => stranger(6));

{
    my $what = 'a GetToken with two Mdm-Signature headers, the first valid';
    my $st = security_token();
    my $body = get_token(udid => $phone, security_token => $st,
        watch_udid => $watch);
    my $res = $t->request(method => 'PUT',
        uri => $MdmWatch::Test::CHECKIN_URI, body => $body,
        headers => [['Content-Type', $MdmWatch::Test::CHECKIN_TYPE],
                    ['Mdm-Signature', $t->mdm_signature($body, 'phone')],
                    ['Mdm-Signature', garbage()]]);
    is($res->{status}, 400, "$what is answered 400");
    is($t->redis('GET', "mdm_watch:security_token:$st"), $watch,
        "$what: the security token is still there");
}

$t->finish;
